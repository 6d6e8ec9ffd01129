"""lmms-eval interoperability (the optional extra: `pip install -e ".[lmms-eval]"`).

- `model.AlignBenchLMMS`: a trained AlignBench run as an lmms-eval model. pyproject.toml registers it in
  lmms-eval's entry-point group `lmms_eval.models` (through `manifest` below), so with the extra installed
      lmms-eval --model alignbench --model_args checkpoint=RUN_DIR --tasks docvqa_val,infovqa_val,chartqa
  works with no edit to lmms-eval.
- `bridge.evaluate_with_lmms_eval`: `alignbench eval --via lmms-eval`, lmms-eval's `simple_evaluate` run in this
  process on a model instance, with lmms-eval's own task definition (prompt, generation settings,
  process_results, metric, aggregation) over the evaluation rows AlignBench selected.

This module imports nothing from lmms-eval: lmms-eval calls `manifest` while its model registry is being built.
"""


def manifest():
    """lmms-eval's entry-point payload: the model id and where its class lives."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="alignbench", simple_class_path="alignbench.lmms.model.AlignBenchLMMS")
