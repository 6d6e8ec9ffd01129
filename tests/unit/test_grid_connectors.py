"""The connectors that work on the patch grid (hreducer, cabstractor, pixelshuffle): which patches make which
token, tiles kept apart, grids that are not square or not divisible, and the grids that cannot work."""

import pytest
import torch

from alignbench.connector import ConnectorContext, build_connector
from alignbench.errors import AlignBenchError

SPATIAL = ["hreducer", "cabstractor", "pixelshuffle"]


def ctx(rows: int, cols: int, d: int = 8, width: int = 12, stated: bool = True) -> ConnectorContext:
    return ConnectorContext(d, width, rows * cols, None, None, (rows, cols) if stated else None)


@pytest.mark.parametrize("name", SPATIAL)
@pytest.mark.parametrize("grid,tiles", [((12, 12), 1), ((10, 10), 3), ((7, 9), 2), ((3, 5), 10)])
def test_token_count_is_what_the_connector_declares_on_any_grid(name, grid, tiles):
    c = ctx(*grid)
    conn = build_connector(name, c)
    out = conn(torch.randn(2, tiles * c.num_patches, c.vision_dim))
    rows, cols = grid
    per_tile = {
        "hreducer": rows * -(-cols // 4),
        "pixelshuffle": -(-rows // 2) * -(-cols // 2),
        "cabstractor": -(-rows // 2) * -(-cols // 2),
    }[name]
    assert out.shape == (2, tiles * per_tile, c.llm_dim) and conn.num_tokens(tiles * c.num_patches) == tiles * per_tile
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SPATIAL)
def test_tiles_are_never_mixed(name):
    c = ctx(6, 8)
    conn = build_connector(name, c).eval()
    feats = torch.randn(1, 3 * c.num_patches, c.vision_dim)
    changed = feats.clone()
    changed[:, c.num_patches : 2 * c.num_patches] = torch.randn(1, c.num_patches, c.vision_dim)  # tile 2 only
    a, b = conn(feats), conn(changed)
    per_tile = conn.num_tokens(c.num_patches)
    same = (a - b).abs().amax(-1) < 1e-6  # [1, T]
    assert same[0, :per_tile].all() and same[0, 2 * per_tile :].all()  # tiles 1 and 3 are untouched
    assert not same[0, per_tile : 2 * per_tile].all()


@pytest.mark.parametrize("name,block", [("hreducer", (1, 4)), ("pixelshuffle", (2, 2))])
def test_a_token_reads_exactly_its_block_of_patches(name, block):
    """Changing patch (r, c) changes the token of its block (r // bh, c // bw), and no other token."""
    rows, cols = 6, 8
    c = ctx(rows, cols)
    conn = build_connector(name, c).eval()
    feats = torch.randn(1, c.num_patches, c.vision_dim)
    base = conn(feats)
    out_cols = -(-cols // block[1])
    for r, col in [(0, 0), (3, 5), (5, 7)]:
        changed = feats.clone()
        changed[0, r * cols + col] += 3.0
        moved = ((conn(changed) - base).abs().amax(-1) > 1e-6).nonzero()[:, 1].tolist()
        assert moved == [(r // block[0]) * out_cols + col // block[1]]


def test_hreducer_and_pixelshuffle_pad_a_grid_that_does_not_divide():
    c = ctx(5, 10)  # 10 columns: not a multiple of 4; 5 rows: not a multiple of 2
    h = build_connector("hreducer", c)
    assert h.num_tokens(c.num_patches) == 5 * 3
    p = build_connector("pixelshuffle", c)
    assert p.num_tokens(c.num_patches) == 3 * 5
    # the padded columns hold zeros: a page and the same page with the padding made explicit agree
    feats = torch.randn(1, c.num_patches, c.vision_dim)
    wide = ctx(5, 12)
    h_wide = build_connector("hreducer", wide)
    h_wide.load_state_dict(h.state_dict())
    padded = torch.zeros(1, 5, 12, c.vision_dim)
    padded[:, :, :10] = feats.reshape(1, 5, 10, -1)
    torch.testing.assert_close(h(feats), h_wide(padded.reshape(1, 60, -1)))


@pytest.mark.parametrize("name", SPATIAL)
def test_a_grid_the_backbone_does_not_state_is_one_message(name):
    c = ctx(24, 24, stated=False)
    assert build_connector(name, c).num_tokens(576) > 0  # a square N: the square grid
    odd = ConnectorContext(8, 12, 577, None)  # a CLS token and 24 x 24 patches, no grid stated
    with pytest.raises(AlignBenchError, match="577 patches per tile is not a square"):
        build_connector(name, odd)


def test_a_stated_grid_must_match_the_patches():
    with pytest.raises(AlignBenchError, match="4 x 5 patch grid but gives 21"):
        build_connector("hreducer", ConnectorContext(8, 12, 21, None, None, (4, 5)))


def test_patches_that_are_not_whole_tiles_are_one_message():
    conn = build_connector("pixelshuffle", ctx(4, 4))
    with pytest.raises(AlignBenchError, match="not a whole number of tiles of 16"):
        conn(torch.randn(1, 20, 8))


@pytest.mark.parametrize(
    "option,needle",
    [
        ("grid_out=9", "larger than the patch grid"),
        ("depth=-1", "depth=-1 must be an integer"),
        ("mlp_depth=0", "mlp_depth=0"),
    ],
)
def test_cabstractor_options_are_checked(option, needle):
    key, value = option.split("=")
    with pytest.raises(AlignBenchError, match=needle):
        build_connector("cabstractor", ctx(6, 8), {key: value})


def test_cabstractor_pools_to_the_grid_it_is_given_and_keeps_locality():
    c = ctx(8, 8)
    conn = build_connector("cabstractor", c, {"grid_out": "2", "pos_emb": "false"}).eval()
    assert conn.num_tokens(64) == 4
    assert conn.pos is None
    out = conn(torch.randn(3, 64, c.vision_dim))
    assert out.shape == (3, 4, c.llm_dim)


def test_the_backbones_state_their_grid(tiny_backbone):
    assert tiny_backbone.grid == (12, 12)
    assert tiny_backbone.connector_context().grid == (12, 12)
