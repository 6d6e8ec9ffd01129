"""What tests/distributed/test_distributed.py runs in one process and tests/distributed/worker.py on two: the same
data, models and training settings on both sides. The worker, started by path, imports it beside itself."""

import copy
import dataclasses
from pathlib import Path

import torch
from safetensors.torch import save_file

from alignbench.config.data import DataConfig
from alignbench.config.eval import EvalConfig
from alignbench.config.parallel import ParallelConfig
from alignbench.config.train import TrainConfig
from alignbench.connector import build_connector
from alignbench.model.checkpoint import load_trained
from alignbench.model.vlm import VLM
from alignbench.task import TASKS
from alignbench.train.loop import TrainSource, train

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = DataConfig(train_docs=6, eval_questions=7)  # 7 questions: no batch size used here divides them evenly
# The project's trained MLP connector (results/embedded): it reads pages, so the predictions compared are real.
MLP_RUN = next((ROOT / "results" / "embedded" / "runs").glob("docvqa-mlp-s0-*"))
EVAL_BATCHES = (2, 3)
JOURNAL_BATCH = 2
JOURNAL_CRASH_AFTER = 3  # generate calls of the single process before it is killed

# Each case trains 3 steps of 4 pages. `micro` is the micro-batch: 2 processes accumulate 4 / (2 x micro)
# micro-batches per step, one process 4 / micro.
TRAIN_CASES = {
    "ddp-align-connector": {"connector": "align", "stage": "connector", "strategy": "ddp", "micro": 2},
    "ddp-ovis-full-accum": {"connector": "ovis", "stage": "full", "strategy": "ddp", "micro": 1},
    "fsdp-align-full": {"connector": "align", "stage": "full", "strategy": "fsdp", "micro": 2},
    "fsdp-align-full-accum": {"connector": "align", "stage": "full", "strategy": "fsdp", "micro": 1},
    "fsdp-perceiver-connector": {"connector": "perceiver", "stage": "connector", "strategy": "fsdp", "micro": 2},
    "ddp-hreducer-connector": {"connector": "hreducer", "stage": "connector", "strategy": "ddp", "micro": 2},
    "ddp-cabstractor-connector": {"connector": "cabstractor", "stage": "connector", "strategy": "ddp", "micro": 1},
    "fsdp-pixelshuffle-full": {"connector": "pixelshuffle", "stage": "full", "strategy": "fsdp", "micro": 2},
}
RESUMED = ("ddp-align-connector", "fsdp-align-full")


def eval_setup(ws):
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "eval")
    model, _ = load_trained(MLP_RUN, ws.backbone)
    return task, split, feats, model


def eval_config(batch: int) -> EvalConfig:
    return EvalConfig(batch_size=batch, blind=True)


def scores(result: dict) -> dict:
    return {k: result[k] for k in ("metric", "score", "stderr", "n", "blind", "per_split") if k in result}


# Training compares in float64: rounding is then far below any real difference (in float32, Adam turns the
# rounding of tiny gradients into weight differences of 1e-4 after 3 steps, even between two micro-batch
# layouts on one process), so the tolerance can be tight enough to catch a wrong loss normalisation.
DTYPE = torch.float64


def full_backbone(ws, dtype=torch.float32):
    return dataclasses.replace(ws.backbone, llm=copy.deepcopy(ws.backbone.llm).to(dtype))


def connector(name: str, backbone, dtype=torch.float32):
    return build_connector(name, backbone.connector_context(), {}, 1234).to(dtype)


def train_config(case: dict) -> TrainConfig:
    return TrainConfig(
        stage=case["stage"], steps=3, batch_size=4, micro_batch_size=case["micro"], warmup_steps=1, lr=3e-3, llm_lr=1e-3
    )


def train_case(ws, case: dict, dist, checkpoint_dir: Path | None = None, crash_at: int | None = None):
    """Train a fresh model as `case` says, on `dist`'s processes; `crash_at`: raise in the N-th loss call."""
    backbone = full_backbone(ws, DTYPE)  # a copy also for stage connector: the shared LLM stays float32
    model = VLM(backbone, connector(case["connector"], backbone, DTYPE))
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "train")
    real_loss, calls = VLM.loss, {"n": 0}

    def loss(self, *args):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise RuntimeError("injected crash")
        return real_loss(self, *args)

    VLM.loss = loss
    try:
        train(
            model,
            [TrainSource(task, split, feats)],
            train_config(case),
            0,
            log=lambda *a, **k: None,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=1,
            dist=dist,
            parallel=ParallelConfig(case["strategy"]),
        )
    finally:
        VLM.loss = real_loss
    return model


def trained_modules(model, case: dict) -> dict:
    return {"connector": model.connector} | ({"llm": model.llm} if case["stage"] == "full" else {})


def save(state: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
