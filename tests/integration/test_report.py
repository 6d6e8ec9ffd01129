"""The report's statistics on output folders built here: pages read from the predictions, seeds as a random
factor in the tables, Holm's adjustment, the variance section, `--plan`, and byte-for-byte reproducibility."""

import json

import numpy as np
import pandas as pd
import pytest

from alignbench.errors import AlignBenchError
from alignbench.reporting.report import write_report
from alignbench.reporting.scores import load_scores
from alignbench.reporting.sections import plan_table
from tests.support.cli import cli
from tests.support.runs import write_runs

MEANS = {"mlp": 0.6, "ovis": 0.3, "align": 0.58}


def _output(tmp_path, seeds=(0,), pages=100, questions=2, with_pages=True, seed_sd=0.02):
    """A leaderboard and predictions in the runs' format: per seed, `pages` pages of `questions` questions, scores
    of known means (a difficulty shared by the connectors, a training effect per connector and seed)."""
    rng = np.random.default_rng(0)
    runs = []
    for s in seeds:
        difficulty = np.repeat(rng.normal(0, 0.2, pages), questions) + rng.normal(0, 0.1, pages * questions)
        for c, mean in MEANS.items():
            runs.append(
                {
                    "connector": c,
                    "seed": s,
                    "scores": np.clip(mean + rng.normal(0, seed_sd) + difficulty, 0, 1),
                    "finished": f"2026-11-{10 + s:02d} 12:00:00",
                    **({"pages": np.arange(pages * questions) // questions} if with_pages else {}),
                }
            )
    return write_runs(tmp_path, runs)


def _report(out, connectors=("mlp", "ovis", "align")) -> str:
    return write_report(out, out / "REPORT.md", list(connectors), ["docvqa"], command="test").read_text()


def _rows(text: str, first: str) -> list[list[str]]:
    """The cells of the Markdown table rows that start with `first` (cell padding ignored)."""
    lines = [" ".join(ln.split()) for ln in text.splitlines()]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith(first)]


def test_load_scores_reads_each_question_page(tmp_path):
    scores = load_scores(_output(tmp_path, questions=3), ["mlp"], ["docvqa"])
    seed = scores[("mlp", "docvqa")]["seeds"][0]
    assert seed["pages"][:7] == [0, 0, 0, 1, 1, 1, 2] and len(seed["pages"]) == 300
    assert scores[("mlp", "docvqa")]["finished"] == ["2026-11-10 12:00:00"]


def test_report_is_byte_for_byte_reproducible(tmp_path):
    out = _output(tmp_path, seeds=(0, 1, 2))
    _report(out)
    first = (out / "REPORT.md").read_bytes()
    _report(out)
    assert (out / "REPORT.md").read_bytes() == first
    assert "finished by 2026-11-12" in first.decode()  # the newest run's date, not today's


def test_one_seed_report_says_training_variance_is_not_measured(tmp_path):
    text = _report(_output(tmp_path))
    assert "† one seed" in text
    assert _rows(text, "| mlp |")[0][1].endswith("†")
    pairs = {r[1]: r for r in _rows(text, "| docvqa | ") if "−" in r[1] and len(r) == 6}
    assert pairs["mlp − ovis"][5] == "yes (1 seed: questions only)"
    variance = next(r for r in _rows(text, "| docvqa | mlp − ovis") if len(r) == 11)
    assert variance[5] == "–" and variance[8].startswith("≥ ")  # seed variance not measured: a lower bound


def test_three_seed_report_treats_seeds_as_a_random_factor(tmp_path):
    text = _report(_output(tmp_path, seeds=(0, 1, 2)))
    assert "† one seed" not in text and "1 seed" not in text.split("## 5.")[0]
    assert _rows(text, "| mlp |")[0][-1] == "3"
    pairs = {r[1]: r for r in _rows(text, "| docvqa | ") if "−" in r[1] and len(r) == 6}
    assert pairs["mlp − ovis"][5] == "yes"
    for row in pairs.values():  # Holm never lowers a p-value, and significance follows the adjusted one
        assert float(row[4]) >= float(row[3]) and (row[5] == "yes") == (float(row[4]) <= 0.05)
    variance = next(r for r in _rows(text, "| docvqa | mlp − ovis") if len(r) == 11)
    assert variance[2:5] == ["3", "100", "2.00"] and float(variance[5]) > 0 and float(variance[6]) > 0
    assert "## 8. Variance components" in text


def test_seeds_that_disagree_widen_the_interval(tmp_path):
    def width(seed_sd, folder):
        row = _rows(_report(_output(tmp_path / folder, seeds=(0, 1, 2), seed_sd=seed_sd)), "| mlp |")[0][1]
        low, high = (float(x) for x in row[row.index("[") + 1 : row.index("]")].split(","))
        return high - low

    assert width(0.1, "disagree") > 2 * width(0.01, "agree")


def test_records_without_pages_are_said_once(tmp_path):
    text = _report(_output(tmp_path, with_pages=False))
    assert text.count("carry no page index") == 1 and "3 of 3 runs" in text
    assert "carry no page index" not in _report(_output(tmp_path / "paged"))


def test_runs_scored_in_different_precisions_are_said(tmp_path):
    """Runs whose results.json record another scoring precision (or none: scored before it was recorded) are
    named in the header with their counts; runs scored alike add nothing."""
    out = _output(tmp_path, seeds=(0, 1))
    for run_dir in (out / "runs").iterdir():
        (run_dir / "results.json").write_text(json.dumps({"eval_dtype": "float32"}))
    assert "different precisions" not in _report(out)
    (out / "runs" / "docvqa-mlp-s1-x" / "results.json").write_text(json.dumps({"eval_dtype": "bfloat16"}))
    (out / "runs" / "docvqa-ovis-s0-x" / "results.json").unlink()
    text = " ".join(_report(out).split())
    assert "scored in different precisions (bfloat16: 1, float32: 4, not recorded (scored before --eval-dtype" in text


def test_plan_prints_the_power_plan_and_writes_no_report(tmp_path):
    out = _output(tmp_path, seeds=(0, 1, 2))
    res = cli("report", "--runs", str(out), "--connectors", "mlp,ovis", "--tasks", "docvqa", "--plan", "2", cwd=out)
    assert res.returncode == 0, res.stderr
    assert "Power plan for a difference of 2 points" in res.stdout and "mlp − ovis" in res.stdout
    assert not (out / "REPORT.md").exists()


@pytest.mark.parametrize("delta", [0, -1, float("nan")])
def test_plan_refuses_a_difference_that_is_not_positive(tmp_path, delta):
    with pytest.raises(AlignBenchError, match="must be a positive difference in points"):
        plan_table(_output(tmp_path), ["mlp", "ovis"], ["docvqa"], delta)


def test_plan_error_is_one_line_exit_2(tmp_path):
    out = _output(tmp_path)
    res = cli("report", "--runs", str(out), "--connectors", "mlp,ovis", "--plan", "0", cwd=out)
    assert res.returncode == 2 and "must be a positive difference in points" in res.stderr
    assert "Traceback" not in res.stderr


def test_report_includes_the_cost_table_and_the_training_curves(tmp_path):
    out = _output(tmp_path, seeds=(0, 1))
    for run in (out / "runs").iterdir():  # each run holds the curve of its weights
        steps = np.arange(1, 21)
        pd.DataFrame(
            {"step": steps, "task": "docvqa", "loss": 3.0 / steps, "lr": 1e-3, "llm_lr": None, "seconds": steps * 0.5}
        ).to_csv(run / "train_curve.csv", index=False)
    without = _report(out)
    assert "## 9. Cost" in without and "`alignbench cost --output" in without  # how to get one
    cost = pd.DataFrame(
        {
            "connector": list(MEANS),
            "params": [10, 20, 30],
            "tokens_page": [144, 36, 144],
            "tokens_tiled": [1440, 360, 1440],
            "gflops_page": [0.01, 0.005, 0.02],
            "gflops_tiled": [0.1, 0.05, 0.2],
            "train_s_step": [1.0, 0.5, 1.2],
            "eval_s_sample": [0.02, 0.01, 0.02],
            "eval_tokens_s": [200.0, 400.0, 180.0],
            "peak_mib": [1400.0, 1300.0, 1500.0],
        }
    )
    cost.to_csv(out / "cost.csv", index=False)
    (out / "cost.json").write_text(
        json.dumps(
            {
                "command_config": {
                    "backbone": "tiny",
                    "task": "docvqa",
                    "tiles": 9,
                    "train_steps": 4,
                    "eval_samples": 32,
                },
                "machine": {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "torch": "2.x", "gpu": None},
                "measured": "2026-12-01",
            }
        )
    )
    (out / "page_information_docvqa.md").write_text(
        "Characters per visual token: `cmd`\n\n| connector | x |\n|---|---|\n| ovis | 4.2 |\n"
    )
    text = _report(out)
    assert "## 11. How much text a visual token carries" in text and "| ovis | 4.2 |" in text
    rows = {r[0]: r for r in _rows(text, "| ") if len(r) == 10}
    assert rows["ovis"][2] == "36" and rows["align"][1] == "30" and "Test CPU" in text
    assert (out / "figures" / "cost_tradeoff.png").stat().st_size > 0
    assert "## 10. Training curves" in text and (out / "figures" / "training_curves.png").stat().st_size > 0
    again = (out / "REPORT.md").read_bytes()
    _report(out)
    assert (out / "REPORT.md").read_bytes() == again
