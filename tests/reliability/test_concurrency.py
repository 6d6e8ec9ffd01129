"""Concurrent runs lose nothing (docs/reliability.md): eight processes appending to one leaderboard at once while
another reads it, writers killed mid-append, eight processes asking for the same run directory in the same second."""

import json
import multiprocessing as mp
import os
import random
import signal
import time

import pytest

from alignbench.run.leaderboard import append_leaderboard, read_leaderboard
from tests.support import workers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_eight_processes_appending_at_once_lose_no_row_and_never_show_a_partial_file(tmp_path):
    ctx = mp.get_context("spawn")
    gate, stop, problems = ctx.Event(), ctx.Event(), ctx.Queue()
    writers = [ctx.Process(target=workers.append_rows, args=(str(tmp_path), w, 5, gate)) for w in range(8)]
    reader = ctx.Process(target=workers.read_continuously, args=(str(tmp_path), stop, problems))
    for p in [*writers, reader]:
        p.start()
    gate.set()  # all eight start appending at the same moment
    for p in writers:
        p.join(120)
        assert p.exitcode == 0
    stop.set()
    reader.join(30)
    assert problems.empty(), problems.get()
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert sorted(board.run_id) == sorted(f"w{w}-r{k}" for w in range(8) for k in range(5))
    assert json.loads(board.per_split[0]) == {"a": {"b": 1, "c": 2}}
    assert not list(tmp_path.glob(".leaderboard.csv.tmp*"))


def test_writers_killed_mid_append_leave_a_whole_leaderboard(tmp_path):
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    writers = [ctx.Process(target=workers.append_forever, args=(str(tmp_path), w, done)) for w in range(4)]
    for p in writers:
        p.start()
    deadline = time.time() + 60
    while done.qsize() < 20 and time.time() < deadline:
        time.sleep(0.01)
    for p in writers:
        time.sleep(random.uniform(0, 0.05))  # SIGKILL at arbitrary points of an append
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    reported = set()
    while not done.empty():
        reported.add(done.get())
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert len(reported) >= 20 and reported <= set(board.run_id)  # every completed append is there
    assert board.run_id.is_unique and board.score.notna().all()
    append_leaderboard(
        tmp_path, {"run_id": "after", "connector": "mlp", "task": "docvqa", "metric": "anls", "score": 1}
    )  # the lock died with its holders
    assert read_leaderboard(tmp_path / "leaderboard.csv").run_id.iloc[-1] == "after"


def test_same_settings_in_the_same_second_never_share_a_run_dir(tmp_path):
    ctx = mp.get_context("spawn")
    gate, result = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=workers.frozen_run_dir, args=(str(tmp_path), gate, result)) for _ in range(8)]
    for p in procs:
        p.start()
    gate.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = [result.get() for _ in procs]
    assert len(set(names)) == 8 and all(n.startswith("docvqa-mlp-s0-20260101-000000-beef") for n in names)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(names)
