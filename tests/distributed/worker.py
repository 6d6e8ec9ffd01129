"""The body of `torchrun --nproc-per-node 2 tests/distributed/worker.py OUT JOURNAL` (test_distributed.py beside it).

Each of the two processes (gloo, CPU) joins the group, then evaluates and trains exactly as
tests/distributed/test_distributed.py does in one process; rank 0 writes what the test compares into OUT:

* eval-B.json: the records and scores of a sharded evaluation with batch size B (7 questions: uneven);
* journal.json: an evaluation that resumes from JOURNAL (a single process wrote part of it);
* NAME.safetensors: the weights after training (DDP, FSDP; and after a crash and a resume);
* checks.json: what each process saw of the failure paths.
"""

import json
import sys
from pathlib import Path

import torch

from alignbench.config.backbone import BackboneConfig
from alignbench.dist import context as distributed
from alignbench.dist.engine import full_state
from alignbench.errors import AlignBenchError
from alignbench.evaluate import evaluate
from alignbench.model.vlm import VLM
from alignbench.run.workspace import Workspace

sys.path.insert(0, str(Path(__file__).parent))
import cases  # noqa: E402  (the settings both sides share; this file runs as a script, beside it)


def main(out: Path, journal: Path) -> None:
    torch.set_num_threads(1)
    dist = distributed.init_from_env("cpu")
    assert dist.world_size == 2, dist
    ws = Workspace(BackboneConfig(), cases.DATA, "cpu", log=lambda *a, **k: None)
    checks = {}

    # 1. evaluation, sharded by batch, gathered: batch sizes that leave the ranks uneven work
    task, split, feats, model = cases.eval_setup(ws)
    for batch in cases.EVAL_BATCHES:
        result, records = evaluate(model, task, split, feats, cases.eval_config(batch))
        if dist.is_main:
            (out / f"eval-{batch}.json").write_text(json.dumps({"result": cases.scores(result), "records": records}))
    result, records = evaluate(model, task, split, feats, cases.eval_config(cases.JOURNAL_BATCH), journal=journal)
    lines = journal.read_text().splitlines() if dist.is_main else []
    if dist.is_main:
        (out / "journal.json").write_text(
            json.dumps(
                {
                    "result": cases.scores(result),
                    "records": records,
                    "from_journal": result["predictions_from_journal"],
                    "journal_lines": lines,
                }
            )
        )

    # 2. an exception on one rank stops both, with the same message
    try:
        list(dist.map_batches([1, 2, 3], lambda b: 1 / 0 if (b == 2) else b))
        checks[f"map_error_{dist.rank}"] = None
    except distributed.SharedError as exc:
        checks[f"map_error_{dist.rank}"] = str(exc)

    # 3. training: two processes, no accumulation (the test trains one process with accumulation 2)
    for name, case in cases.TRAIN_CASES.items():
        model = cases.train_case(ws, case, dist)
        state = {
            f"{k}.{n}": t for k, m in cases.trained_modules(model, case).items() for n, t in full_state(m, dist).items()
        }
        if dist.is_main:
            cases.save(state, out / f"{name}.safetensors")

    # 4. a crash at step 3 on both ranks, then a resume from the checkpoint of step 2 (rank 0 wrote it)
    for name in cases.RESUMED:
        case = cases.TRAIN_CASES[name]
        ckpt = out / f"ckpt-{name}"
        ckpt = Path(dist.broadcast(str(ckpt)))
        try:
            cases.train_case(ws, case, dist, checkpoint_dir=ckpt, crash_at=3)
        except RuntimeError as exc:
            assert "injected crash" in str(exc)
        model = cases.train_case(ws, case, dist, checkpoint_dir=ckpt)
        state = {
            f"{k}.{n}": t for k, m in cases.trained_modules(model, case).items() for n, t in full_state(m, dist).items()
        }
        if dist.is_main:
            cases.save(state, out / f"{name}-resumed.safetensors")

    # 5. ALIGN refuses an embedding matrix sharded outside its own unit (summed shards would be wrong)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    backbone = cases.full_backbone(ws)
    connector = cases.connector("align", backbone)
    fully_shard(backbone.llm.get_input_embeddings(), mesh=init_device_mesh("cpu", (2,)))
    for key, call in (
        ("align_sharded", lambda: connector(feats[[0]])),
        ("align_sharded_model", lambda: VLM(backbone, connector).visual_tokens(feats[[0]])),  # the model's own path
    ):
        try:
            call()
            checks[f"{key}_{dist.rank}"] = None
        except AlignBenchError as exc:
            checks[f"{key}_{dist.rank}"] = str(exc)

    gathered = dist.gather(checks)
    if dist.is_main:
        (out / "checks.json").write_text(json.dumps({k: v for c in gathered for k, v in c.items()}))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
