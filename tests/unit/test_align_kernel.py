"""The chunked ALIGN kernel against the naive formula: values and every gradient, in float64 on odd sizes;
through the real connector (impl=naive vs impl=chunked); what it keeps for the backward pass."""

import sys

import pytest
import torch
from torch import nn

from alignbench.align_kernel import (
    VocabHead,
    align_attention,
    normalised_logits,
    passes,
    resolve,
    vocab_pass,
    vocab_stats,
)
from alignbench.connector import CONNECTORS, build_connector, distribution_stats, parse_connector_args
from alignbench.errors import AlignBenchError

F64 = torch.float64


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


class Align(nn.Module):
    """ALIGN on its own (no LLM): out = softmax(LN2(W2 · LN1(W1 · F))) · E_text, naive or chunked."""

    def __init__(self, d: int, dim: int, vocab: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w1, self.ln1 = nn.Linear(d, dim), nn.LayerNorm(dim)
        self.w2, self.ln2 = nn.Linear(dim, vocab), nn.LayerNorm(vocab)
        self.e_text = nn.Parameter(torch.randn(vocab, dim, generator=gen))
        with torch.no_grad():  # no default values (1, 0): every parameter shapes the output
            for p in (self.w1.weight, self.w1.bias, self.w2.weight, self.w2.bias, self.ln1.bias, self.ln2.bias):
                p.copy_(torch.randn(p.shape, generator=gen))
            self.w2.weight.add_(0.3)  # a mean row far from zero
            self.ln1.weight.copy_(torch.rand(dim, generator=gen) + 0.5)
            self.ln2.weight.copy_(torch.rand(vocab, generator=gen) * 3 - 0.5)  # some negative gains
        self.double()

    def forward(self, features, impl: str, chunk: int = 7, strategy: str = "auto"):
        h = self.ln1(self.w1(features))
        if impl == "naive":
            return torch.softmax(self.ln2(self.w2(h)), -1) @ self.e_text
        return align_attention(
            h, self.w2.weight, self.w2.bias, self.ln2.weight, self.ln2.bias, self.ln2.eps, self.e_text, chunk, strategy
        )


def outputs_and_grads(model: Align, features, impl: str, **kw):
    features = features.detach().clone().requires_grad_()
    out = model(features, impl, **kw)
    weights = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(7))
    names = ["features"] + [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad((out * weights).sum(), [features, *model.parameters()])
    return out, dict(zip(names, grads))


# (leading batch dims, T, d, D, V, chunk, strategy): V never a multiple of the chunk except where stated
CASES = [
    ((), 1, 3, 5, 37, 8, "gram"),  # a single token
    ((), 1, 3, 5, 37, 8, "stream"),
    ((2,), 9, 4, 6, 53, 16, "gram"),  # D < T
    ((2,), 9, 4, 6, 53, 16, "stream"),
    ((2,), 4, 3, 6, 31, 8, "hybrid"),  # D + 1 > T, var from G, b from Q
    ((), 1, 3, 5, 37, 8, "hybrid"),
    ((3, 2), 5, 6, 17, 50, 7, "auto"),  # two leading dims, D > T -> stream
    ((2,), 11, 3, 4, 29, 64, "auto"),  # one chunk larger than the vocabulary
    ((2,), 6, 3, 8, 40, 8, "auto"),  # V a multiple of the chunk
    ((1,), 4, 3, 5, 23, 1, "auto"),  # chunks of one row
]


@pytest.mark.parametrize("batch,T,d,D,V,chunk,strategy", CASES)
def test_chunked_matches_naive_in_float64(batch, T, d, D, V, chunk, strategy):
    model = Align(d, D, V, seed=T * 1000 + V)
    features = torch.randn(*batch, T, d, dtype=F64, generator=torch.Generator().manual_seed(V))
    out_n, grads_n = outputs_and_grads(model, features, "naive")
    out_c, grads_c = outputs_and_grads(model, features, "chunked", chunk=chunk, strategy=strategy)
    assert out_c.shape == out_n.shape == (*batch, T, D) and out_c.dtype == F64
    assert rel_err(out_c, out_n) < 1e-6
    assert set(grads_c) == {
        "features",
        "w1.weight",
        "w1.bias",
        "ln1.weight",
        "ln1.bias",
        "w2.weight",
        "w2.bias",
        "ln2.weight",
        "ln2.bias",
        "e_text",
    }
    for name, g in grads_n.items():
        assert g.norm() > 0, name  # the comparison is not between zeros
        assert rel_err(grads_c[name], g) < 1e-6, name


@pytest.mark.parametrize(
    "dim,tokens,expected",
    [
        (1024, 2916, "gram"),
        (1024, 1025, "gram"),
        (1024, 729, "hybrid"),
        (2048, 2916, "gram"),
        (2048, 1500, "hybrid"),
        (2048, 729, "stream"),
        (1024, 1, "stream"),
    ],
)
def test_auto_takes_the_cheapest_strategy(dim, tokens, expected):
    """Passes beyond the common 7: gram 1.5 (D+1)/T, stream 2, hybrid (D+1)/2T + 1."""
    assert resolve("auto", dim, tokens) == expected
    assert passes(expected, dim, tokens) == min(passes(s, dim, tokens) for s in ("gram", "stream", "hybrid"))
    assert resolve("stream", dim, tokens) == "stream"


def test_the_tolerance_detects_a_wrong_layer_norm():
    """The comparison above fails for a kernel that is slightly off: here LN2's eps differs by 1e-3."""
    model = Align(3, 5, 37, seed=0)
    features = torch.randn(2, 9, 3, dtype=F64)
    _, grads_n = outputs_and_grads(model, features, "naive")
    model.ln2.eps = 1e-3
    _, grads_c = outputs_and_grads(model, features, "chunked")
    assert max(rel_err(grads_c[n], g) for n, g in grads_n.items()) > 1e-6


@pytest.mark.parametrize("strategy", ["gram", "stream", "hybrid"])
@pytest.mark.parametrize("needed", [(0,), (1,), (2,), (3,), (4,), (5,), (0, 5), (1, 2, 3, 4)])
def test_only_the_needed_gradients(strategy, needed):
    """Each input alone (and a few combinations) needs grad: every branch of the backward pass stays exact."""
    gen = torch.Generator().manual_seed(3)
    T, D, V = 6, 4, 31
    inputs = [
        torch.randn(2, T, D, dtype=F64, generator=gen),
        torch.randn(V, D, dtype=F64, generator=gen) + 0.2,
        torch.randn(V, dtype=F64, generator=gen),
        torch.rand(V, dtype=F64, generator=gen) + 0.5,
        torch.randn(V, dtype=F64, generator=gen),
        torch.randn(V, D, dtype=F64, generator=gen),
    ]
    for i in needed:
        inputs[i].requires_grad_()
    h, w2, b2, g, beta, e = inputs
    naive = torch.softmax(nn.functional.layer_norm(h @ w2.T + b2, (V,), g, beta, 1e-5), -1) @ e
    chunked = align_attention(h, w2, b2, g, beta, 1e-5, e, chunk_size=8, strategy=strategy)
    dout = torch.randn(naive.shape, dtype=F64, generator=gen)
    want = torch.autograd.grad(naive, [inputs[i] for i in needed], dout)
    got = torch.autograd.grad(chunked, [inputs[i] for i in needed], dout)
    for i, a, b in zip(needed, got, want):
        assert rel_err(a, b) < 1e-6, i


@pytest.mark.parametrize("strategy", ["gram", "stream", "hybrid"])
def test_inference_path_matches(strategy):
    """Without grad (evaluation), the kernel runs outside autograd and gives the same values."""
    model = Align(3, 5, 41, seed=1)
    features = torch.randn(2, 7, 3, dtype=F64)
    with torch.no_grad():
        want = model(features, "naive")
        got = model(features, "chunked", chunk=8, strategy=strategy)
    assert got.grad_fn is None and got.shape == want.shape and rel_err(got, want) < 1e-6


def test_bf16_inputs_are_upcast_per_chunk():
    """bf16 weights: the kernel computes in float32, so it matches the float32 formula on the same values."""
    gen = torch.Generator().manual_seed(5)
    T, D, V = 12, 16, 300
    h = torch.randn(T, D, generator=gen).bfloat16().requires_grad_()
    w2 = (torch.randn(V, D, generator=gen) / 4).bfloat16().requires_grad_()
    b2, g, beta = (torch.randn(V, generator=gen).bfloat16().requires_grad_() for _ in range(3))
    e = torch.randn(V, D, generator=gen).bfloat16().requires_grad_()
    out = align_attention(h, w2, b2, g, beta, 1e-5, e, chunk_size=64)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().sum(), [h, w2, b2, g, beta, e])
    assert [x.dtype for x in grads] == [torch.bfloat16] * 6
    ref_inputs = [t.detach().float().requires_grad_() for t in (h, w2, b2, g, beta, e)]
    rh, rw2, rb2, rg, rbeta, re = ref_inputs
    ref = torch.softmax(nn.functional.layer_norm(rh @ rw2.T + rb2, (V,), rg, rbeta, 1e-5), -1) @ re
    ref_grads = torch.autograd.grad(ref.sum(), ref_inputs)
    torch.testing.assert_close(out, ref.bfloat16())
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want.bfloat16(), rtol=1.6e-2, atol=1e-3)


def _saved_numels(fn) -> list[tuple[int, bool]]:
    """(numel, is an input's own storage) of every tensor autograd keeps for the backward pass of fn()."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        inputs = fn()
    ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    return [(t.numel(), t.untyped_storage().data_ptr() in ptrs) for t in saved]


@pytest.mark.parametrize("impl", ["naive", "chunked"])
def test_backward_keeps_no_token_by_vocabulary_matrix(impl):
    T, D, V = 64, 8, 1000
    gen = torch.Generator().manual_seed(0)
    h, w2, e = (torch.randn(*s, generator=gen, requires_grad=True) for s in ((T, D), (V, D), (V, D)))
    b2, g, beta = (torch.randn(V, generator=gen, requires_grad=True) for _ in range(3))

    def run():
        if impl == "naive":
            torch.softmax(nn.functional.layer_norm(h @ w2.T + b2, (V,), g, beta), -1) @ e
        else:
            align_attention(h, w2, b2, g, beta, 1e-5, e, chunk_size=128)
        return [h, w2, b2, g, beta, e]

    kept = [n for n, is_input in _saved_numels(run) if not is_input]  # inputs are kept by reference
    if impl == "naive":
        assert max(kept) >= T * V  # the check below would catch a [T, V] matrix
    else:
        assert kept and max(kept) <= T * (D + 1)


@pytest.mark.parametrize("T,D", [(40, 6), (3, 9)])  # both strategies
def test_vocab_stats_match_the_materialised_distribution(T, D):
    gen = torch.Generator().manual_seed(1)
    V = 77
    h, w2 = torch.randn(2, T, D, generator=gen), torch.randn(V, D, generator=gen)
    b2, g, beta = torch.randn(V, generator=gen), torch.rand(V, generator=gen) * 4, torch.randn(V, generator=gen)
    probs = torch.softmax(nn.functional.layer_norm(h @ w2.T + b2, (V,), g, beta), -1)
    want, got = distribution_stats(probs), vocab_stats(h, VocabHead(w2, b2, g, beta, 1e-5), chunk_size=10)
    assert got["size"] == want["size"] == V and got["support_1e-6"] == want["support_1e-6"]
    assert got["mean_top_prob"] == pytest.approx(want["mean_top_prob"], rel=1e-5)
    assert got["mean_entropy"] == pytest.approx(want["mean_entropy"], rel=1e-5)


# ---------------------------------------------------------------- through the connector


def test_connector_impl_naive_and_chunked_agree(ctx):
    naive = build_connector("align", ctx, {"impl": "naive"}, init_seed=3)
    chunked = build_connector("align", ctx, {"impl": "chunked", "chunk_size": "16"}, init_seed=3)  # V = 102
    feats = torch.randn(2, ctx.num_patches, ctx.vision_dim, generator=torch.Generator().manual_seed(0))
    assert not naive.chunked_for(feats) and chunked.chunked_for(feats)
    with torch.no_grad():  # a trained-looking LN2 (the default gain 1, bias 0 hides mistakes)
        for conn in (naive, chunked):
            conn.ln2.weight.copy_(torch.linspace(-1, 4, ctx.vocab_size))
            conn.ln2.bias.copy_(torch.linspace(1, -1, ctx.vocab_size))
    e_text = ctx.llm.get_input_embeddings().weight
    outs, grads = [], []
    for conn in (naive, chunked):
        out = conn(feats)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), [*conn.parameters(), e_text]))
    # float32 here (the LLM's own E_text): both sit about 1e-6 from the float64 values, so compare norm-wise
    assert outs[1].shape == outs[0].shape and rel_err(outs[1], outs[0]) < 1e-5
    for got, want in zip(grads[1], grads[0]):
        assert want.norm() > 0 and rel_err(got, want) < 1e-5
    stats_n = naive.diagnostics(feats)["vocab_distribution"]
    stats_c = chunked.diagnostics(feats)["vocab_distribution"]
    assert stats_c["support_1e-6"] == stats_n["support_1e-6"] and stats_c["size"] == stats_n["size"]
    assert stats_c["mean_entropy"] == pytest.approx(stats_n["mean_entropy"], rel=1e-5)


def test_connector_auto_uses_chunked_only_beyond_one_chunk_and_a_large_p(ctx, monkeypatch):
    align_module = sys.modules[type(build_connector("align", ctx)).__module__]

    feats = torch.randn(2, ctx.num_patches, ctx.vision_dim)  # P: 2 x N x 102 entries
    assert not build_connector("align", ctx).chunked_for(feats)  # V = 102 <= 4096: the naive path
    assert not build_connector("align", ctx, {"chunk_size": "101"}).chunked_for(feats)  # P is small
    monkeypatch.setattr(align_module, "NAIVE_MAX_ENTRIES", 2 * ctx.num_patches * ctx.vocab_size - 1)
    wide = build_connector("align", ctx, {"chunk_size": "101"})
    assert wide.chunked_for(feats) and not wide.chunked_for(feats[:1])  # P one entry too large, then half of it
    assert not build_connector("align", ctx, {"chunk_size": "102"}).chunked_for(feats)
    calls = []
    real = align_module.align_attention
    monkeypatch.setattr(align_module, "align_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    wide(feats)
    wide(feats[:1])
    assert calls == [1]  # forward follows the choice: the kernel for the large batch only


@pytest.mark.parametrize(
    "args,match",
    [
        ({"impl": "fast"}, "impl='fast' is not one of auto, naive, chunked"),
        ({"impl": "Chunked"}, "is not one of"),
        ({"chunk_size": "0"}, "must be a positive integer"),
        ({"chunk_size": "-4"}, "must be a positive integer"),
        ({"chunk_size": "big"}, "not a valid int"),
    ],
)
def test_connector_rejects_bad_impl_options(args, match, ctx):
    with pytest.raises(AlignBenchError, match=match):
        parse_connector_args(CONNECTORS.get("align"), args)
    with pytest.raises(AlignBenchError, match=match):
        build_connector("align", ctx, args)


def test_kernel_rejects_bad_arguments():
    h, w, v = torch.randn(2, 3), torch.randn(5, 3), torch.randn(5)
    with pytest.raises(ValueError, match="strategy"):
        align_attention(h, w, v, v, v, 1e-5, w, strategy="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        align_attention(h, w, v, v, v, 1e-5, w, chunk_size=0)


@pytest.mark.parametrize("T,D", [(40, 6), (3, 9)])
def test_vocab_pass_matches_the_materialised_distribution(T, D):
    """What the vocabulary probe streams (sum of p, top probability and id, entropy, a target's probability)
    equals what the [..., V] matrix gives, in float64."""
    gen = torch.Generator().manual_seed(2)
    V = 83
    h, w2 = torch.randn(2, T, D, generator=gen, dtype=F64), torch.randn(V, D, generator=gen, dtype=F64) + 0.2
    b2, beta = torch.randn(V, generator=gen, dtype=F64), torch.randn(V, generator=gen, dtype=F64)
    g = torch.rand(V, generator=gen, dtype=F64) * 4 - 0.5
    targets = torch.randint(0, V, (2, T), generator=gen)
    probs = torch.softmax(nn.functional.layer_norm(h @ w2.T + b2, (V,), g, beta), -1)  # [2, T, V]
    got = vocab_pass(h, VocabHead(w2, b2, g, beta, 1e-5), chunk_size=10, targets=targets)
    assert rel_err(got["prob_sum"], probs.sum((0, 1))) < 1e-10
    top, top_id = probs.max(-1)
    assert rel_err(got["top_prob"], top) < 1e-10 and torch.equal(got["top_id"], top_id)
    assert rel_err(got["entropy"], -(probs * probs.log()).sum(-1)) < 1e-10
    assert rel_err(got["target_prob"], probs.gather(-1, targets[..., None])[..., 0]) < 1e-10
    ids = torch.tensor([5, 0, 82, 41])
    want = nn.functional.layer_norm(h @ w2.T + b2, (V,), g, beta)[..., ids]
    assert rel_err(normalised_logits(h, VocabHead(w2, b2, g, beta, 1e-5), ids, chunk_size=10), want) < 1e-10
