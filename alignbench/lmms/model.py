"""A trained AlignBench run as an lmms-eval model: `lmms-eval --model alignbench --model_args checkpoint=RUN_DIR`.

The run is rebuilt from its directory alone (`alignbench.run.checkpoint_eval.load_run`). Generation goes through the
very code AlignBench's own evaluation uses (`alignbench.evaluate.predict`: same prompt format, same batching by
prompt length, same greedy decoding), so the two evaluators differ only in their task definitions and metrics.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from ..backbones.base import LazyFeatures
from ..config.eval import EvalConfig
from ..data.splits import Sample, Split
from ..evaluate import eval_dtype, predict
from ..task import Task


def _prompt_task(name: str, max_new_tokens: int) -> Task:
    """A task whose prompt is lmms-eval's context as given (lmms-eval already added its pre/post prompt)."""
    return Task(
        name=name,
        hf_path="",
        hf_config=None,
        eval_split="",
        question_field="question",
        answers_field="answers",
        prompt_suffix="",
        metric="anls",
        max_new_tokens=max_new_tokens,
    )


class AlignBenchLMMS(lmms):
    """lmms-eval model arguments: `checkpoint` (a run directory), `device` (auto, cpu, cuda[:N]), `batch_size`,
    `eval_dtype` (auto, float32 or model: `alignbench eval --eval-dtype`)."""

    is_simple = True

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str | None = None,
        batch_size: int | str = 16,
        max_batch_size=None,
        eval_dtype: str = "auto",
        model=None,
        backbone=None,
        **kwargs,
    ):
        super().__init__()
        if kwargs:
            warnings.warn(f"alignbench ignores model_args {sorted(kwargs)}", stacklevel=2)
        if model is None:
            if not checkpoint:
                raise ValueError(
                    "the alignbench model needs --model_args checkpoint=RUN_DIR (a directory written by "
                    "`alignbench run`)"
                )
            from ..run.checkpoint_eval import load_run

            model, _, ws = load_run(Path(checkpoint), device or "auto", log=lambda *a, **k: None)
            backbone, device = ws.backbone, ws.device
        self.vlm, self.backbone, self.device = model.eval(), backbone, device or "cpu"
        self.batch_size = int(batch_size)
        self.eval_config = EvalConfig(batch_size=self.batch_size, blind=False, dtype=str(eval_dtype))
        self.eval_config.validate()
        self._warned_sampling = False
        self.computed_in: str | None = None  # the LLM's precision while generating (`--eval-dtype`)

    # ------------------------------------------------------------------ requests

    def _visual(self, request: Instance):
        _, _, doc_to_visual, doc_id, task, split = request.args[:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if not visuals:
            raise ValueError(f"{task} document {doc_id} has no image; AlignBench models answer about one image")
        return visuals[0].convert("RGB")  # one image per question: the first

    def generate_until(self, requests: list[Instance]) -> list[str]:
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for i, request in enumerate(requests):
            gen_kwargs = dict(request.args[1] or {})
            if (gen_kwargs.get("do_sample") or (gen_kwargs.get("temperature") or 0) > 0) and not self._warned_sampling:
                warnings.warn("alignbench decodes greedily; sampling settings are ignored", stacklevel=2)
                self._warned_sampling = True
            until = gen_kwargs.get("until") or ()
            until = (until,) if isinstance(until, str) else tuple(until)
            groups.setdefault((int(gen_kwargs.get("max_new_tokens", 32)), until), []).append(i)
        out: list[str] = [""] * len(requests)
        with self.vlm.llm_in(eval_dtype(self.eval_config, self.device, self.vlm)) as dtype:
            self.computed_in = str(dtype).removeprefix("torch.")
            for (max_new_tokens, until), members in groups.items():
                self._generate_group(requests, max_new_tokens, until, members, out)
        return out

    def _generate_group(self, requests, max_new_tokens: int, until: tuple[str, ...], members: list[int], out) -> None:
        # Dataset order, so batches are formed as AlignBench's own evaluation forms them.
        members.sort(key=lambda i: (requests[i].args[4], requests[i].args[5], requests[i].args[3]))
        images = [self._visual(requests[i]) for i in members]
        samples = [Sample(k, requests[i].args[0], [], None, str(requests[i].args[3])) for k, i in enumerate(members)]
        preds = predict(
            self.vlm,
            _prompt_task("lmms-eval", max_new_tokens),
            Split(images, samples),
            LazyFeatures(self.backbone, images, self.device),
            self.eval_config,
            device=self.device,
        )
        for i, text in zip(members, preds):
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            out[i] = text

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        with self.vlm.llm_in(eval_dtype(self.eval_config, self.device, self.vlm)):
            return [self._loglikelihood(request) for request in requests]

    def _loglikelihood(self, request: Instance) -> tuple[float, bool]:
        import torch

        from ..prompt import prompt_format

        tok = self.vlm.tokenizer
        context, target, _, doc_id, task, split = request.args[:6]
        if callable(target):
            target = target(self.task_dict[task][split][doc_id])
        if isinstance(target, (list, tuple)):
            target = target[0]
        prompt = prompt_format(tok).prompt_ids(tok, context)
        continuation = tok(str(target), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + continuation], device=self.device)
        labels = torch.tensor([[-100] * len(prompt) + continuation], device=self.device)
        features = self.backbone.encode_images([self._visual(request)], device=self.device).to(self.device)
        logprob, greedy = self.vlm.continuation_logprobs(features, ids, torch.ones_like(ids), labels)
        return logprob[0], greedy[0]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("alignbench models answer single-turn questions about one image")
