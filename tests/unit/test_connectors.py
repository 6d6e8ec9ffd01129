"""Every registered connector (parametrised over the registry, so a new connector file is covered): declared token
count, shapes, the output contract, gradients, init seed; ALIGN's equations."""

import pytest
import torch

from alignbench.connector import CONNECTORS, build_connector, parse_connector_args
from alignbench.errors import AlignBenchError
from alignbench.model.vlm import check_output


@pytest.mark.parametrize("name", CONNECTORS.names())
def test_shapes_and_declared_tokens(name, ctx):
    conn = build_connector(name, ctx)
    feats = torch.randn(3, ctx.num_patches, ctx.vision_dim)
    out = conn(feats)
    assert out.shape == (3, conn.num_tokens(ctx.num_patches), ctx.llm_dim)
    check_output(conn, feats, out, ctx.llm_dim)  # what every run checks of a connector's output passes
    out.square().mean().backward()
    grads = [p.grad for p in conn.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", CONNECTORS.names())
def test_init_seed_is_separate_and_reproducible(name, ctx):
    a = build_connector(name, ctx, init_seed=1)
    b = build_connector(name, ctx, init_seed=1)
    c = build_connector(name, ctx, init_seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].dtype.is_floating_point and sa[k].std() > 0)
    # building a connector leaves the global RNG (the data order's) untouched
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_connector(name, ctx, init_seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_align_follows_the_paper(ctx):
    conn = build_connector("align", ctx)
    lm_head = ctx.llm.get_output_embeddings().weight
    e_text = ctx.llm.get_input_embeddings().weight
    assert torch.equal(conn.w2.weight, lm_head)  # W2 initialised from the LM head
    assert conn.ln2.normalized_shape == (e_text.shape[0],)  # LayerNorm over the full vocabulary
    feats = torch.randn(2, ctx.num_patches, ctx.vision_dim)
    probs = conn.vocab_distribution(feats)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, ctx.num_patches))
    manual = torch.softmax(conn.ln2(conn.w2(conn.ln1(conn.w1(feats)))), -1) @ e_text
    torch.testing.assert_close(conn(feats), manual)
    # E_text is the LLM's own matrix, read live and never copied into the connector's weights
    assert not any(t.data_ptr() == e_text.data_ptr() for t in conn.state_dict().values())
    assert all(p.data_ptr() != e_text.data_ptr() for p in conn.parameters())


def test_align_outputs_stay_in_text_embedding_hull(ctx):
    conn = build_connector("align", ctx)
    e_text = ctx.llm.get_input_embeddings().weight
    out = conn(100 * torch.randn(1, ctx.num_patches, ctx.vision_dim))  # even for huge inputs
    assert (out <= e_text.max(0).values + 1e-5).all() and (out >= e_text.min(0).values - 1e-5).all()


def test_connector_options_are_typed():
    cls = CONNECTORS.get("perceiver")
    assert parse_connector_args(cls, {"num_latents": "16"}).num_latents == 16
    with pytest.raises(AlignBenchError, match="no option 'latents'"):
        parse_connector_args(cls, {"latents": "16"})
    with pytest.raises(AlignBenchError, match="not a valid int"):
        parse_connector_args(cls, {"num_latents": "many"})


def test_perceiver_emits_fixed_token_count(ctx):
    conn = build_connector("perceiver", ctx, {"num_latents": "8"})
    assert conn(torch.randn(1, 50, ctx.vision_dim)).shape[1] == 8 == conn.num_tokens(50)


@pytest.mark.parametrize("name", ["align", "ovis"])
def test_softmax_connectors_report_their_distribution(name, ctx):
    stats = next(iter(build_connector(name, ctx).diagnostics(torch.randn(2, ctx.num_patches, ctx.vision_dim)).values()))
    assert 0 < stats["mean_top_prob"] <= 1 and stats["mean_entropy"] > 0
    assert 0 < stats["support_1e-6"] <= stats["size"]
