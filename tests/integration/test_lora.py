"""Stage `lora` and the two-stage protocol (`llm_steps`): what trains when, what a run writes, and that the written
run rebuilds the model that produced its predictions. Resume inside the LLM stage is in
tests/reliability/test_resume.py."""

import copy
import dataclasses
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from alignbench.config.train import TrainConfig
from alignbench.connector import CONNECTORS, build_connector
from alignbench.model.checkpoint import LORA_FILE, load_trained, training_backbone
from alignbench.model.lora import adapters
from alignbench.model.vlm import VLM
from alignbench.task import TASKS
from alignbench.train.loop import TrainSource, train
from tests.support.cli import cli, flags, no_run_directory, one_line_error

QUIET = {"log": lambda *a, **k: None}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("connector", CONNECTORS.names())
def test_the_llm_stage_starts_after_the_connector_stage(ws, tmp_path, monkeypatch, connector):
    """Steps 1-2 train the connector alone (the adapters keep their initial values, B = 0: the LLM is unchanged);
    steps 3-4 train both. Read from the checkpoints training writes after every step."""
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "train")
    cfg = TrainConfig(stage="lora", steps=4, llm_steps=2, batch_size=2, warmup_steps=1, lr=3e-3, llm_lr=1e-2)
    backbone = training_backbone(ws.backbone, dataclasses.asdict(cfg))
    model = VLM(backbone, build_connector(connector, backbone.connector_context(), {}, 1234))
    initial = {k: v.clone() for k, v in adapters(model.llm).state_dict().items()}
    connector_before = {k: v.clone() for k, v in model.connector.state_dict().items()}
    written = {}
    import alignbench.train.loop as train_module

    real_save = train_module.save_checkpoint

    def keep(run_dir, step, module_states, *rest):
        written[step] = {k: {n: t.clone() for n, t in v.items()} for k, v in module_states.items()}
        return real_save(run_dir, step, module_states, *rest)

    monkeypatch.setattr(train_module, "save_checkpoint", keep)
    train(model, [TrainSource(task, split, feats)], cfg, 0, checkpoint_dir=tmp_path, checkpoint_every=1, **QUIET)
    assert sorted(written) == [1, 2, 3, 4] and set(written[1]) == {"connector", "lora"}
    for step in (1, 2):
        assert all(torch.equal(written[step]["lora"][k], v) for k, v in initial.items()), step
    assert all(v.abs().max() == 0 for k, v in initial.items() if k.endswith("__B.weight"))
    changed = [k for k, v in initial.items() if not torch.equal(written[4]["lora"][k], v)]
    assert any(k.endswith("__B.weight") for k in changed) and any(k.endswith("__A.weight") for k in changed)
    assert any(not torch.equal(written[1]["connector"][k], v) for k, v in connector_before.items())
    assert all(not p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n)


@pytest.mark.parametrize("stage", ["lora", "full"])
def test_the_connector_stage_computes_no_llm_gradient(ws, stage):
    """On one process the LLM's gradients, dropped in the connector stage anyway, are not computed there: a hook
    on an LLM weight fires in the LLM stage's steps only, while the connector trains in every step."""
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "train")
    cfg = TrainConfig(stage=stage, steps=5, llm_steps=2, batch_size=2, warmup_steps=1, lr=3e-3, llm_lr=1e-3)
    backbone = (
        training_backbone(ws.backbone, dataclasses.asdict(cfg))
        if stage == "lora"
        else dataclasses.replace(ws.backbone, llm=copy.deepcopy(ws.backbone.llm))
    )
    model = VLM(backbone, build_connector("mlp", backbone.connector_context(), {}, 1234))
    trained = adapters(model.llm) if stage == "lora" else model.llm
    weight = next(p for p in trained.parameters())
    fired, connector_grads = [], []
    weight.register_hook(lambda g: fired.append(len(connector_grads)))
    first = next(model.connector.parameters())
    first.register_hook(lambda g: connector_grads.append(1))
    train(model, [TrainSource(task, split, feats)], cfg, 0, **QUIET)
    # each value: the connector gradients computed before it, in earlier steps (the connector's gradient comes last in
    # a backward pass): the LLM's gradient is computed in steps 4 and 5 only
    assert len(connector_grads) == 5 and fired == [3, 4]


def test_a_lora_run_writes_its_adapters_and_rebuilds_its_predictions(tmp_path):
    """`run --stage lora`: the config states the protocol, lora.safetensors holds only the adapters, and the
    model rebuilt from the run directory alone (`eval --checkpoint`) predicts what the run predicted."""
    out = tmp_path / "out"
    args = [
        *("--connector", "mlp", "--task", "docvqa", "--no-blind"),
        *flags(steps=6, batch_size=2, train_docs=6, eval_questions=8, stage="lora", llm_steps=3, llm_lr="1e-2"),
    ]
    done = cli("run", *args, "--output", out)
    assert done.returncode == 0, done.stderr
    run_dir = next((out / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert (
        config["train"].items()
        >= {"stage": "lora", "llm_steps": 3, "lora_rank": 16, "lora_targets": "all-linear"}.items()
    )
    saved = load_file(str(run_dir / LORA_FILE))
    assert saved and all("__A" in k or "__B" in k for k in saved)
    assert any(k.endswith("__B.weight") and v.abs().max() > 0 for k, v in saved.items())
    again = cli("eval", "--checkpoint", run_dir, "--output", tmp_path / "again", "--no-blind")
    assert again.returncode == 0, again.stderr
    first = [json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    redo_dir = next((tmp_path / "again" / "runs").iterdir())
    second = [json.loads(line)["prediction"] for line in (redo_dir / "predictions.jsonl").read_text().splitlines()]
    assert first == second and len(first) == 8


def test_load_trained_applies_the_adapters(ws, tmp_path):
    """The rebuilt model's LLM carries the trained adapters, not fresh ones: its logits differ from the LLM
    without LoRA and equal the trained model's."""
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "train")
    cfg = TrainConfig(stage="lora", steps=3, batch_size=2, warmup_steps=1, lr=3e-3, llm_lr=1e-2)
    backbone = training_backbone(ws.backbone, dataclasses.asdict(cfg))
    model = VLM(backbone, build_connector("mlp", backbone.connector_context(), {}, 1234))
    train(model, [TrainSource(task, split, feats)], cfg, 0, **QUIET)
    from alignbench.model.checkpoint import save_trained

    save_trained(tmp_path, model, "lora")
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "connector": "mlp",
                "connector_args": {},
                "backbone_key": ws.backbone.key,
                "train": dataclasses.asdict(cfg),
            }
        )
    )
    rebuilt, _ = load_trained(tmp_path, ws.backbone)
    ids = torch.tensor([[5, 6, 7, 8]])
    model.eval()
    with torch.no_grad():
        want = model.llm(input_ids=ids).logits
        got = rebuilt.llm(input_ids=ids).logits
        plain = ws.backbone.llm(input_ids=ids).logits
    assert torch.allclose(want, got) and not torch.allclose(plain, got)
    assert not adapters(ws.backbone.llm)  # the shared backbone's LLM is never modified


@pytest.mark.parametrize(
    "args, message",
    [
        (["--llm-steps", "2"], "--llm-steps needs a stage in which the LLM trains"),
        (["--stage", "lora", "--llm-steps", "9"], "--llm-steps must be between 1 and --steps (4)"),
        (["--stage", "lora", "--llm-steps", "0"], "--llm-steps must be between 1 and --steps (4)"),
        (["--stage", "lorax"], "unknown stage 'lorax'"),
    ],
)
def test_bad_stage_options_are_one_line_before_any_run_directory(tmp_path, args, message):
    done = cli("run", "--connector", "mlp", "--steps", "4", "--stage", "connector", *args, "--output", tmp_path)
    one_line_error(done, message)
    assert no_run_directory(tmp_path)


def test_sweep_trains_each_connector_with_its_best_searched_trial(tmp_path):
    """`tune` writes lr_search.csv; `sweep --tuned` reads each connector's best trial (its learning rate and
    options), as the leaderboard and config.json it writes show."""
    search = tmp_path / "tune"
    done = cli(
        "tune",
        "--connectors",
        "mlp,perceiver",
        "--lrs",
        "1e-3,3e-2",
        *flags(steps=3, batch_size=2, train_docs=4, eval_questions=6),
        "--grid",
        "perceiver.num_latents=4,8",
        "--output",
        search,
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(search / "lr_search.csv", keep_default_na=False)
    assert len(table) == 2 + 4
    best = {}
    for c, rows in table.groupby("connector"):
        top = rows.sort_values(["val_score", "final_loss"], ascending=[False, True]).iloc[0]
        best[c] = (top.lr, top.options)
    out = tmp_path / "sweep"
    done = cli(
        "sweep",
        "--connectors",
        "mlp,perceiver",
        "--tasks",
        "docvqa",
        *flags(steps=2, batch_size=2, train_docs=4, eval_questions=6),
        "--tuned",
        search / "lr_search.csv",
        "--output",
        out,
    )
    assert done.returncode == 0, done.stderr
    for run_dir in (out / "runs").iterdir():
        config = json.loads((run_dir / "config.json").read_text())
        lr, options = best[config["connector"]]
        assert config["train"]["lr"] == pytest.approx(lr)
        assert {k: str(v) for k, v in config["connector_args"].items()} == dict(kv.split("=") for kv in options.split())
    missing = cli(
        "sweep", "--connectors", "mlp,ovis", "--tasks", "docvqa", "--tuned", search / "lr_search.csv", "--output", out
    )
    assert missing.returncode == 2 and "has no trial of ovis" in missing.stderr.strip()
    bad = tmp_path / "bad.csv"
    bad.write_text("hello\n1\n")
    done = cli("sweep", "--connectors", "mlp", "--tasks", "docvqa", "--tuned", bad, "--output", out)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "not a search table" in done.stderr


def test_the_frozen_llm_of_other_stages_has_no_adapters(ws):
    for stage in ("connector", "full"):
        backbone = training_backbone(ws.backbone, {"stage": stage})
        assert not adapters(backbone.llm)
