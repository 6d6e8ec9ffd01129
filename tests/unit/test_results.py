"""Leaderboard and tables: appends never lose rows (also from concurrent processes), table layout."""

import multiprocessing as mp

import pandas as pd
import pytest

from alignbench.errors import AlignBenchError
from alignbench.reporting.leaderboard import comparison_table, table_markdown
from alignbench.run.leaderboard import append_leaderboard, read_leaderboard


def _row(connector, task, score, seed=0, run_id=None):
    return {
        "run_id": run_id or f"{task}-{connector}-{seed}",
        "connector": connector,
        "task": task,
        "seed": seed,
        "score": score,
        "stderr": 0.01,
        "n": 100,
        "blind_score": 0.05,
        "metric": "anls",
    }


def _append(args):
    out, i = args
    append_leaderboard(out, _row("mlp", "docvqa", i / 10, run_id=f"r{i}"))


def test_concurrent_appends_lose_no_row(tmp_path):
    with mp.get_context("spawn").Pool(8) as pool:
        pool.map(_append, [(tmp_path, i) for i in range(8)])
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert sorted(board.run_id) == [f"r{i}" for i in range(8)]
    assert not list(tmp_path.glob(".leaderboard.csv.tmp*"))


def test_append_keeps_existing_rows_and_new_columns(tmp_path):
    append_leaderboard(tmp_path, _row("mlp", "docvqa", 0.5))
    append_leaderboard(tmp_path, _row("align", "docvqa", 0.7) | {"extra": 1})
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert list(board.connector) == ["mlp", "align"] and "extra" in board.columns


def test_unreadable_leaderboard_is_a_message(tmp_path):
    (tmp_path / "leaderboard.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AlignBenchError, match="not a valid leaderboard: it holds binary data"):
        read_leaderboard(tmp_path / "leaderboard.csv")


def test_comparison_table_layout_and_seed_mean():
    df = pd.DataFrame(
        [
            _row("mlp", "docvqa", 0.5),
            _row("mlp", "chartqa", 0.3),
            _row("align", "docvqa", 0.8),
            _row("align", "docvqa", 0.6, seed=1),
            _row("align", "chartqa", 0.4),
        ]
    )
    table = comparison_table(df, ["mlp", "align"], ["docvqa", "chartqa"])
    assert list(table.connector) == ["mlp", "align"]
    assert table.loc[1, "docvqa"] == pytest.approx(70.0)  # mean over seeds, in points
    assert table.loc[0, "avg"] == pytest.approx(40.0)
    md = table_markdown(table, ["docvqa", "chartqa"], {"docvqa": "anls", "chartqa": "relaxed_accuracy"})
    md = "\n".join(" ".join(line.split()) for line in md.splitlines())  # cell padding ignored
    assert "| mlp | 50.0 ± 1.0 | 30.0 ± 1.0 | 40.0 |" in md
    assert "| blind (align, shuffled pages) | 5.0 | 5.0 | 5.0 |" in md
