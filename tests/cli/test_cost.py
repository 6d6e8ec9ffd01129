"""`alignbench cost`: the table it writes, read back, against what each connector declares."""

import json

import pandas as pd
import pytest

from alignbench.connector import build_connector
from tests.support.cli import cli


def test_the_cost_table_measures_every_connector_it_names(tmp_path, tiny_backbone):
    res = cli(
        "cost",
        "--connectors",
        "mlp,cabstractor",
        "--tiles",
        2,
        "--train-steps",
        2,
        "--eval-samples",
        4,
        "--output",
        tmp_path,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    table = pd.read_csv(tmp_path / "cost.csv")
    assert table.connector.tolist() == ["mlp", "cabstractor"]
    ctx = tiny_backbone.connector_context()
    for _, row in table.iterrows():
        conn = build_connector(row.connector, ctx)
        n = ctx.num_patches
        assert row.params == sum(p.numel() for p in conn.parameters())
        assert (row.tokens_page, row.tokens_tiled) == (conn.num_tokens(n), conn.num_tokens(3 * n))  # 2 tiles + thumb
        assert row.gflops_tiled == pytest.approx(3 * row.gflops_page, rel=0.02) and row.gflops_page > 0
        assert row.train_s_step > 0 and row.eval_s_sample > 0 and row.eval_tokens_s > 0 and row.peak_mib > 100
    mlp = table.set_index("connector").loc["mlp"]
    # the MLP's FLOPs per page are its two matrix products: 2 x N x (d x D + D x D)
    assert mlp.gflops_page * 1e9 == pytest.approx(2 * n * (ctx.vision_dim * ctx.llm_dim + ctx.llm_dim**2))
    meta = json.loads((tmp_path / "cost.json").read_text())
    assert meta["machine"]["cpu_count"] and meta["device"] == "cpu"
    md = (tmp_path / "cost.md").read_text()
    assert "| cabstractor " in md and meta["machine"]["cpu"] in md


@pytest.mark.parametrize(
    "args,needle",
    [(["--tiles", "0"], "--tiles must be at least 1"), (["--connectors", "mlp,nope"], "unknown connector 'nope'")],
)
def test_bad_cost_options_are_one_line(tmp_path, args, needle):
    res = cli("cost", *args, "--output", tmp_path, timeout=900)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "cost.csv").exists()
