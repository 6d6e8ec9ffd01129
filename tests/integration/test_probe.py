"""Probes (feature noise, image corruptions, ALIGN's vocabulary) and the report, on runs trained for real with a tiny
budget (the statistics behind the report: tests/unit/test_stats.py)."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from alignbench.errors import AlignBenchError
from tests.support.cli import cli, flags
from tests.support.runs import write_runs

SMALL = flags(steps=3, batch_size=4, train_docs=6, eval_questions=8)


# ---------------------------------------------------------------- image corruptions


@pytest.mark.parametrize("name", ["blur", "jpeg", "downscale", "rotate", "pixel"])
def test_each_corruption_changes_the_page_and_keeps_its_shape(name):
    from alignbench.probes.image import corrupt

    rng = np.random.default_rng(0)
    page = Image.fromarray(np.where(rng.random((96, 96, 3)) > 0.8, 0, 255).astype(np.uint8))
    out = corrupt(page, name, 3)
    assert out.size == page.size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(page))
    mild = np.abs(np.asarray(corrupt(page, name, 1), float) - np.asarray(page, float)).mean()
    strong = np.abs(np.asarray(out, float) - np.asarray(page, float)).mean()
    assert strong >= mild


def test_bad_corruption_specs_are_refused():
    from alignbench.probes.image import parse_corruptions

    assert parse_corruptions("blur, jpeg:3") == [("blur", 2), ("jpeg", 3)]
    for bad in ["smudge", "blur:7", "blur:x", " , "]:
        with pytest.raises(AlignBenchError):
            parse_corruptions(bad)


# ---------------------------------------------------------------- probes on real (tiny) runs


@pytest.fixture(scope="module")
def trained_output(tmp_path_factory):
    """mlp and align trained briefly on docvqa, through the command line."""
    out = tmp_path_factory.mktemp("probe-runs")
    res = cli("sweep", "--connectors", "mlp,align", "--tasks", "docvqa", *SMALL, "--output", str(out), cwd=out)
    assert res.returncode == 0, res.stderr
    return out


def _workspace():
    from alignbench.config.backbone import BackboneConfig
    from alignbench.config.data import DataConfig
    from alignbench.run.workspace import Workspace

    return Workspace(BackboneConfig(), DataConfig(train_docs=6, eval_questions=8), "cpu", log=lambda *a: None)


def _configs(connectors):
    from alignbench.config.data import DataConfig
    from alignbench.config.run import RunConfig
    from alignbench.config.train import TrainConfig
    from alignbench.run.sweep import run_config

    return [
        run_config(
            RunConfig(
                connector=c,
                device="cpu",
                data=DataConfig(train_docs=6, eval_questions=8),
                train=TrainConfig(steps=3, batch_size=4),
            )
        )
        for c in connectors
    ]


def test_noise_probe_reuses_runs_and_matches_their_clean_scores(trained_output):
    from alignbench.probes.common import trained_models
    from alignbench.probes.noise import noise_probe

    board_before = (trained_output / "leaderboard.csv").read_bytes()
    ws = _workspace()
    trained = trained_models(_configs(["mlp", "align"]), trained_output, ws, log=lambda *a: None)
    assert [t.trained_now for t in trained] == [False, False]  # nothing retrained
    assert (trained_output / "leaderboard.csv").read_bytes() == board_before
    probe = noise_probe(trained, "docvqa", ws, [0.0, 1.0, 3.0], "absolute", log=lambda *a: None)
    board = pd.read_csv(trained_output / "leaderboard.csv")
    for entry in probe["runs"]:
        row = board[board.run_id == entry["run"]].iloc[0]
        assert entry["scores"]["0"]["score"] == pytest.approx(row.score)  # σ = 0 is the run's own evaluation
        assert entry["drift"]["0"] == pytest.approx(0.0, abs=1e-6)
        assert entry["drift"]["3"] > entry["drift"]["1"] > 0
        assert len(entry["per_sample"]["3"]) == row.n


def test_relative_sigma_scales_with_the_feature_std(trained_output):
    from alignbench.probes.common import trained_models
    from alignbench.probes.noise import noise_probe

    ws = _workspace()
    trained = trained_models(_configs(["mlp"]), trained_output, ws, log=lambda *a: None)
    probe = noise_probe(trained, "docvqa", ws, [0.0, 2.0], "relative", log=lambda *a: None)
    std = probe["feature_std"]["0"]
    assert probe["runs"][0]["abs_sigma"]["2"] == pytest.approx(2 * std)
    with pytest.raises(AlignBenchError):
        noise_probe(trained, "docvqa", ws, [0.0], "sideways")


def test_probe_trains_only_what_is_missing(tmp_path):
    from alignbench.probes.common import trained_models

    ws = _workspace()
    first = trained_models(_configs(["mlp"]), tmp_path, ws, log=lambda *a: None)
    assert first[0].trained_now and len(pd.read_csv(tmp_path / "leaderboard.csv")) == 1
    again = trained_models(_configs(["mlp"]), tmp_path, ws, log=lambda *a: None)
    assert not again[0].trained_now and again[0].run_dir == first[0].run_dir
    assert len(pd.read_csv(tmp_path / "leaderboard.csv")) == 1


def test_loaded_run_reproduces_its_predictions(trained_output):
    from alignbench.config.eval import EvalConfig
    from alignbench.evaluate import evaluate
    from alignbench.model.checkpoint import load_trained
    from alignbench.task import TASKS

    ws = _workspace()
    run_dir = next((trained_output / "runs").glob("docvqa-mlp-*"))
    model, _ = load_trained(run_dir, ws.backbone)
    split, feats = ws.split(TASKS.get("docvqa"), "eval")
    _, records = evaluate(model, TASKS.get("docvqa"), split, feats, EvalConfig(blind=False))
    saved = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in records] == [r["prediction"] for r in saved]


def test_image_probe_scores_every_corruption(trained_output):
    from alignbench.probes.common import trained_models
    from alignbench.probes.image import image_probe

    ws = _workspace()
    trained = trained_models(_configs(["mlp"]), trained_output, ws, log=lambda *a: None)
    probe = image_probe(trained, "docvqa", ws, [("blur", 3), ("rotate", 2)], log=lambda *a: None)
    assert set(probe["runs"][0]["scores"]) == {"clean", "blur:3", "rotate:2"}


def test_vocab_probe_statistics_and_pruning(trained_output):
    from alignbench.probes.vocab import PrunedAlign, vocab_probe

    ws = _workspace()
    run_dir = next((trained_output / "runs").glob("docvqa-align-*"))
    probe = vocab_probe(run_dir, ws, docs=4, top_ks=[10, 200], log=lambda *a: None)
    a, vocab = probe["averaged"], probe["vocab_size"]
    assert 1 / vocab <= a["max_prob"] <= 1 and 0 < a["entropy"] <= np.log(vocab) + 1e-6
    assert a["tokens_above_1e-6"] <= vocab and len(a["top_tokens"]) == 20
    assert [p["k"] for p in probe["pruning"]] == [vocab, 10]  # k >= V is the full vocabulary
    board = pd.read_csv(trained_output / "leaderboard.csv")
    assert probe["pruning"][0]["score"] == pytest.approx(board[board.run_id == run_dir.name].score.iloc[0])
    assert 0 <= probe["reading"]["top_token_is_cell_glyph"] <= 1  # embedded pages: the glyphs are known

    # the streamed statistics are those of the materialised [patches, V] distribution
    from alignbench.model.checkpoint import load_trained as _load
    from alignbench.probes.vocab import _page_cell_ids
    from alignbench.task import TASKS

    model, _ = _load(run_dir, ws.backbone)
    split, feats = ws.split(TASKS.get("docvqa"), "eval")
    c = model.connector
    with torch.no_grad():
        probs = torch.softmax(c.ln2(c.w2(c.ln1(c.w1(feats[:4])))).double(), -1)  # [4, N, V]
    avg = probs.flatten(0, 1).mean(0)
    assert a["max_prob"] == pytest.approx(avg.max().item(), rel=1e-4)
    assert a["entropy"] == pytest.approx(-(avg * avg.log()).sum().item(), rel=1e-4)
    assert [t["id"] for t in a["top_tokens"][:5]] == torch.argsort(avg, descending=True)[:5].tolist()
    assert probe["per_patch"]["mean_top_prob"] == pytest.approx(probs.max(-1).values.mean().item(), rel=1e-4)
    cells, blank = _page_cell_ids(ws, "docvqa", split, model.tokenizer)
    ids = torch.tensor(cells[:4])
    assert blank == model.tokenizer.convert_tokens_to_ids(" ")  # glyph pages: one character per cell
    ink = ids != blank
    assert probe["reading"]["top_token_is_cell_glyph"] == pytest.approx(
        (probs.argmax(-1) == ids)[ink].double().mean().item()
    )
    assert probe["reading"]["mean_prob_of_cell_glyph"] == pytest.approx(
        probs.gather(-1, ids[..., None])[..., 0][ink].mean().item(), rel=1e-4
    )

    from alignbench.model.checkpoint import load_trained

    model, _ = load_trained(run_dir, ws.backbone)
    feats = torch.randn(2, ws.backbone.num_patches, ws.backbone.vision_dim)
    full = PrunedAlign(model.connector, torch.arange(vocab))
    assert torch.allclose(full(feats), model.connector(feats), atol=1e-5)


def test_vocab_probe_refuses_a_non_align_run(trained_output):
    run_dir = next((trained_output / "runs").glob("docvqa-mlp-*"))
    res = cli("probe", "vocab", "--run", str(run_dir), cwd=trained_output)
    assert res.returncode == 2 and "needs an ALIGN run" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["probe", "noise", "--sigmas", "0,abc"], "--sigmas"),
        (["probe", "noise", "--sigmas", "-1"], "non-negative"),
        (["probe", "noise", "--sigma-mode", "sideways"], "--sigma-mode"),
        (["probe", "noise", "--eval-dtype", "half"], "--eval-dtype"),
        (["probe", "image", "--eval-batch-size", "0"], "--eval-batch-size"),
        (["probe", "noise", "--seeds", "a,b"], "--seeds"),
        (["probe", "image", "--corruptions", "smudge"], "unknown corruption"),
        (["probe", "vocab", "--run", "nowhere"], "not a run directory"),
        (["report", "--runs", "nowhere"], "no leaderboard"),
    ],
)
def test_probe_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert needle in " ".join(res.stderr.split()) and "Traceback" not in res.stderr


# ---------------------------------------------------------------- report


def _fake_output(tmp_path, means: dict[str, float], n=200, seed=0):
    """A leaderboard and predictions in the runs' format, with per-question scores of known means."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n)
    runs = [
        {"connector": c, "seed": 0, "scores": np.clip(mean + 0.3 * (difficulty - 0.5) + rng.normal(0, 0.05, n), 0, 1)}
        for c, mean in means.items()
    ]
    return write_runs(tmp_path, runs)


@pytest.mark.parametrize(
    "means,verdict",
    [
        ({"mlp": 0.5, "perceiver": 0.3, "ovis": 0.6, "align": 0.7}, "reproduces"),
        ({"mlp": 0.7, "perceiver": 0.3, "ovis": 0.6, "align": 0.2}, "does not reproduce"),
        ({"mlp": 0.5, "perceiver": 0.5, "ovis": 0.5, "align": 0.5}, "inconclusive"),
    ],
)
def test_report_states_whether_the_ordering_reproduces(tmp_path, means, verdict):
    from alignbench.reporting.report import write_report

    out = _fake_output(tmp_path, means)
    path = write_report(out, out / "REPORT.md", ["mlp", "perceiver", "ovis", "align"], ["docvqa"], command="test")
    text = path.read_text()
    lines = [" ".join(ln.split()) for ln in text.splitlines()]  # cell padding ignored
    line = next(ln for ln in lines if ln.startswith("| docvqa |") and "verdict" not in ln)
    cell = line.rstrip(" |").rsplit("|", 1)[-1].strip()
    assert cell.removesuffix(" (1 seed: questions only)") == verdict  # one seed: the verdict says so
    assert (out / "figures" / "scores.png").stat().st_size > 0
    for section in ["Connectors × tasks", "paper's numbers", "Paired differences", "noise", "vocabulary"]:
        assert section in text


def test_probe_finds_runs_under_reuse_from(trained_output, tmp_path):
    """A probe writing to a new output finds the runs another output trained (--reuse-from) and trains nothing."""
    elsewhere = tmp_path / "probes-only"
    args = ("probe", "noise", "--connectors", "mlp", "--sigmas", "0,3", *SMALL, "--output", str(elsewhere))
    scoring = ("--eval-batch-size", "3", "--eval-dtype", "model")
    res = cli(*args, *scoring, "--reuse-from", str(trained_output), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "re-using" in res.stdout and "0 trained" in res.stdout
    assert not (elsewhere / "runs").exists() or not any((elsewhere / "runs").iterdir())
    probe = json.loads(next((elsewhere / "probes").glob("noise-*/probe.json")).read_text())
    board = pd.read_csv(trained_output / "leaderboard.csv")
    (entry,) = probe["runs"]
    assert entry["run"] in set(board.run_id)  # the run it read is the other output's
    # scored as the command said; the float32 tiny LLM answers alike in batches of 3 and of 64 (the run's)
    assert probe["eval"] == {"batch_size": 3, "dtype": "model"} and probe["eval_dtype"] == "float32"
    assert entry["scores"]["0"]["score"] == pytest.approx(board[board.run_id == entry["run"]].iloc[0].score)
    res = cli(*args, "--reuse-from", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert res.returncode == 2 and "--reuse-from" in res.stderr and "Traceback" not in res.stderr


def test_report_on_real_runs_and_probes(trained_output):
    res = cli(
        "probe",
        "noise",
        "--connectors",
        "mlp,align",
        "--sigmas",
        "0,3",
        *SMALL,
        "--output",
        str(trained_output),
        cwd=trained_output,
    )
    assert res.returncode == 0, res.stderr
    assert "re-using" in res.stdout and "0 trained" in res.stdout
    res = cli(
        "report", "--runs", str(trained_output), "--connectors", "mlp,align", "--tasks", "docvqa", cwd=trained_output
    )
    assert res.returncode == 0, res.stderr
    text = (trained_output / "REPORT.md").read_text()
    assert "MLP's drop minus ALIGN's" in text and (trained_output / "figures" / "noise_docvqa.png").is_file()


def test_sweep_with_seeds_reports_mean_and_std(tmp_path):
    res = cli(
        "sweep",
        "--connectors",
        "mlp",
        "--tasks",
        "docvqa",
        "--seeds",
        "0,1",
        *SMALL,
        "--output",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert sorted(board.seed) == [0, 1] and sorted(board.init_seed) == [1234, 1235]
    assert "(2 seeds)" in (tmp_path / "table.md").read_text()
    res = cli("leaderboard", "--output", str(tmp_path), cwd=tmp_path)
    assert "across seeds" in res.stdout


def test_report_joins_probes_measured_the_same_way(trained_output, tmp_path):
    """A connector probed after the others joins their probe in the report; other settings start afresh."""
    import shutil

    from alignbench.cli.report import recorded_setup, run_backbones
    from alignbench.probes.collect import collect_probes

    out = tmp_path / "out"
    shutil.copytree(trained_output, out)
    shutil.rmtree(out / "probes", ignore_errors=True)

    def probe(connectors, sigmas):
        args = ("probe", "noise", "--connectors", connectors, "--sigmas", sigmas, *SMALL, "--output", str(out))
        res = cli(*args, cwd=out)
        assert res.returncode == 0, res.stderr
        return max((out / "probes").glob("noise-*/probe.json"), key=lambda p: p.parent.name)

    first, second = probe("mlp", "0,3"), probe("align", "0,3")
    written = {p: json.loads(p.read_text()) for p in (first, second)}
    assert written[first]["setup"] == written[second]["setup"]
    joined = collect_probes(out)[("noise", "docvqa")]
    assert [(r["connector"], r["probe"]) for r in joined["runs"]] == [
        ("mlp", str(first.parent)),
        ("align", str(second.parent)),
    ]
    assert joined["runs"][0]["scores"] == written[first]["runs"][0]["scores"]
    res = cli("report", "--runs", str(out), "--connectors", "mlp,align", "--tasks", "docvqa", cwd=out)
    assert res.returncode == 0, res.stderr
    text = (out / "REPORT.md").read_text()
    section = text[text.index("## 5.") : text.index("## 6.")]
    rows = re.findall(r"^\| (\w+) +\|", section, flags=re.M)
    assert "Joined from 2 probes" in section and {"mlp", "align"} <= set(rows)
    assert written[first]["command"] in section and written[second]["command"] in section

    # A probe written before probes recorded their setup joins through the command line it recorded
    legacy = {k: v for k, v in written[first].items() if k != "setup"}
    first.write_text(json.dumps(legacy))
    assert collect_probes(out)[("noise", "docvqa")]["runs"][0]["connector"] == "align"  # unknown setup: alone
    assert recorded_setup(legacy, run_backbones(out)) == written[second]["setup"]
    joined = collect_probes(out, lambda p: recorded_setup(p, run_backbones(out)))[("noise", "docvqa")]
    assert [r["connector"] for r in joined["runs"]] == ["mlp", "align"]
    unreadable = {**legacy, "command": "alignbench probe noise --no-such-option"}
    assert recorded_setup(unreadable, run_backbones(out)) is None

    # Re-probing a connector with the same settings replaces its entry; other levels start afresh
    third = probe("mlp", "0,3")
    joined = collect_probes(out)[("noise", "docvqa")]
    assert {r["connector"]: r["probe"] for r in joined["runs"]} == {
        "mlp": str(third.parent),
        "align": str(second.parent),
    }
    fourth = probe("mlp", "0,1")
    joined = collect_probes(out)[("noise", "docvqa")]
    assert [(r["connector"], r["probe"]) for r in joined["runs"]] == [("mlp", str(fourth.parent))]
    assert joined["sigmas"] == [0.0, 1.0] and len(joined["sources"]) == 1

    # A probe scored in another precision (here: one scored before the precision was recorded) starts afresh
    assert written[first]["eval_dtype"] == "float32"  # the tiny LLM on the CPU
    fifth = probe("align", "0,1")
    assert [r["connector"] for r in collect_probes(out)[("noise", "docvqa")]["runs"]] == ["mlp", "align"]
    unrecorded = {k: v for k, v in json.loads(fifth.read_text()).items() if k != "eval_dtype"}
    fifth.write_text(json.dumps(unrecorded))
    assert [r["connector"] for r in collect_probes(out)[("noise", "docvqa")]["runs"]] == ["align"]
