"""Exact, memory-efficient ALIGN: out = softmax(LN2(h · W2ᵀ + b2)) · E_text, streamed over the vocabulary.

ALIGN is single-query attention over the vocabulary (queries h = LN1(W1 · F) [T, D], keys = rows of W2,
values = rows of E_text [V, D]) with a LayerNorm on the V logits. The naive form keeps [T, V] logits and
probabilities for the backward pass (1.7 GB per image at paper scale in bf16). Here the vocabulary is read
in chunks of `chunk_size` rows with an online softmax, and the backward pass recomputes each chunk, so the
extra memory is O(T·D + T·chunk) (plus the gradients themselves, which are the size of the parameters).

Why hand-written: fused attention kernels (PyTorch SDPA, FlashAttention) have no LayerNorm across the keys'
logits, and no library offers a vocabulary softmax with that LayerNorm and recompute. The LayerNorm only
needs each token's logit mean and variance:

    mean_t = h_t · mean_v(w_v) + mean(b2)                 (a linear form of the query)
    var_t  = |h_t W̃ᵀ + b̃|² / V,  W̃ = W2 - mean row, b̃ = b2 - mean(b2)

With k_v = [w̃_v, b̃_v] the centred keys, x_t = [h_t, 1], r = (var + eps)^-1/2, the normalised logits are
x̂_tv = r_t x_t · k_v; y = g ⊙ x̂ + β (LN2's affine), p = softmax(y), out = p · E. Per token (δ = dout · out):

    dE = pᵀ · dout,   dy = p ⊙ (dout · Eᵀ - δ),   dβ = Σ_t dy,   dg = Σ_t dy ⊙ x̂,   dx̂ = g ⊙ dy
    dz = r (dx̂ - a - b x̂),   a = mean_v dx̂,   b = mean_v dx̂ ⊙ x̂
    dh = dz · W2 = dz · W̃ (Σ_v dz = 0),   dW2 = dzᵀ · h,   db2 = Σ_t dz

a and b are known only after the whole vocabulary was seen. The a-term is constant over v, so it drops
out of dh and is one rank-1 correction of dW2 and db2. The b-term is handled by one of three strategies,
chosen by cost (one "pass" below is a [T, V] x D matrix product, 2·T·V·D flops):

* "gram": var from the Gram matrix G = Σ_v k_v k_vᵀ ([D+1, D+1]; symmetric, so only its upper half is
  multiplied: about (D+1)/2T of a pass); afterwards the b-term of dh is -r_t² b_t (G x_t)[:D], and that of
  [dW2, db2] is -[W̃, b̃] · M with M = Σ_t b_t r_t² x_t x_tᵀ ((D+1)/T of a pass). x̂ itself is never needed
  in the backward pass: LN2's gain is folded into the keys (one product gives y - lse),
  dg_v = k_v · Σ_t dy_tv r_t x_t comes out of the dW2 product, and b_t = r_t x_t · Σ_v g_v dy_tv k_v out of
  the dh product, so each chunk costs three element-wise sweeps over [T, chunk] besides its five products.
* "stream": var from one extra pass over the logits; the forward pass also accumulates
  Q_t = Σ_v g_v p_tv x̂_tv e_v, so that b_t = (Q_t · dout_t - δ_t Σ_v g_v p_tv x̂_tv) / V is known before
  the backward pass and dz is exact chunk by chunk (one extra pass).
* "hybrid": var from the Gram matrix as in "gram", b from Q as in "stream": the Gram's half pass and one
  extra pass (Q), with the backward pass of "stream".

Forward: 2 passes + the statistics; backward: 5 passes (the recomputed logits, dout·Eᵀ, dE, dh, dW2).
In all 7 + 1.5·(D+1)/T passes ("gram"), 9 ("stream") or 8 + (D+1)/2T ("hybrid"), against 6 for the naive
form; "auto" takes the cheapest: "gram" when T > D+1, "hybrid" when (D+1)/2 < T <= D+1, "stream" below.
Without keeping [T, V] numbers the backward pass needs p again (one recomputed product) besides the four
products the naive backward does; in the forms above LN2's variance costs min((D+1)/2T, 1) of a pass and
its share of the gradient (b) min((D+1)/T, 1). So on a machine where the naive form's time is its matrix
products (it also writes and reads several [T, V] matrices, which costs where memory is slow), the chunked
form takes at least (7 + those two)/6 of its time (1.45 at T = 729, D = 1024); what it saves is the [T, V]
memory. `passes` gives each strategy's count; benchmarks/align_memory.py sets it against measured times.

Implementation notes. Queries and keys carry a few extra columns, so that one matrix product also yields
what would otherwise be a separate sweep: X = [r h | r | 1 | -lse | 0] against Kg = [g w̃ | g b̃ | β | 1 | g]
gives y (with the lse column zero) or y - lse, and the product dy · Kg gives Σ_v g dy k_v and a = Σ_v dx̂ / V
in its last column. Rows are padded to a multiple of 16 numbers (aligned rows for the matrix library).
Math runs in float32 (float64 if an input is float64); bf16 or fp16 inputs are upcast chunk by chunk.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

STRATEGIES = ("auto", "gram", "stream", "hybrid")
GRAM_BLOCK = 256  # columns per block row of the Gram matrix


def align_attention(
    h: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    e_text: torch.Tensor,
    chunk_size: int = 4096,
    strategy: str = "auto",
) -> torch.Tensor:
    """softmax(layer_norm(h @ w2ᵀ + b2, (V,), ln_weight, ln_bias, eps)) @ e_text, h: [..., D] -> [..., D].

    Exact in value and gradient (h, w2, b2, ln_weight, ln_bias, e_text) up to rounding; the output has
    e_text's dtype, the gradients their inputs' dtypes."""
    _check(chunk_size, strategy)
    inputs = (h, w2, b2, ln_weight, ln_bias, e_text)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs)):  # inference: nothing to keep
        with torch.no_grad():
            out = _forward(*inputs, float(eps), int(chunk_size), strategy, track_q=False)[0]
        return out.reshape(h.shape).to(e_text.dtype)
    return _AlignAttention.apply(*inputs, float(eps), int(chunk_size), strategy)


def _check(chunk_size: int, strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def passes(strategy: str, dim: int, tokens: int) -> float:
    """Forward + backward cost of a strategy in passes (one [T, V] x D matrix product each): the 7 every
    strategy makes, plus "gram" 1.5 (D+1)/T (half for the symmetric G, one for the b-term of dW2), "stream" 2
    (the variance's pass and Q's), "hybrid" (D+1)/2T + 1 (G's half and Q's pass). The naive form makes 6."""
    ratio = (dim + 1) / tokens
    return 7.0 + {"gram": 1.5 * ratio, "stream": 2.0, "hybrid": 0.5 * ratio + 1.0}[strategy]


def resolve(strategy: str, dim: int, tokens: int) -> str:
    """The strategy "auto" stands for: the cheapest in `passes` (ties go to gram, then stream)."""
    if strategy != "auto":
        return strategy
    return min(("gram", "stream", "hybrid"), key=lambda name: passes(name, dim, tokens))


# Column layout of the augmented queries X [T, width] and keys [n, width] (see the module docstring).
def _width(dim: int) -> int:
    return (dim + 4 + 15) // 16 * 16


class _Vocab:
    """The vocabulary side, one chunk at a time, in the compute dtype: centred keys k = [W̃, b̃] (with or
    without LN2's gain folded in), LN2's affine, and the values E_text."""

    def __init__(self, w2, b2, ln_weight, ln_bias, e_text, chunk: int, dtype: torch.dtype):
        self.w2, self.b2, self.ln_weight, self.ln_bias, self.e_text = w2, b2, ln_weight, ln_bias, e_text
        self.size, self.dim = w2.shape
        self.chunk, self.dtype, self.device = min(chunk, self.size), dtype, w2.device
        self.width = _width(self.dim)
        self.ranges = [(s, min(s + chunk, self.size)) for s in range(0, self.size, chunk)]
        w_sum = torch.zeros(self.dim, dtype=dtype, device=self.device)
        for s, e in self.ranges:
            w_sum += w2[s:e].to(dtype).sum(0)
        self.w_mean = w_sum / self.size  # [D]
        self.b_mean = b2.to(dtype).mean()
        self._keys = torch.zeros(self.chunk, self.width, dtype=dtype, device=self.device)
        self._scaled = None
        upcast = e_text is not None and e_text.dtype != dtype
        self._values = torch.empty(self.chunk, self.dim, dtype=dtype, device=self.device) if upcast else None

    def keys(self, s: int, e: int, ones_column: bool = False) -> torch.Tensor:
        """[n, width] = [W̃ | b̃ | 0 | 0 | 1 or 0 | 0]: against X, the normalised logits x̂ (and Σ_v in the
        last used column when the product goes the other way)."""
        D, out = self.dim, self._keys[: e - s]
        torch.sub(self.w2[s:e], self.w_mean, out=out[:, :D])
        out[:, D].copy_(self.b2[s:e]).sub_(self.b_mean)
        out[:, D + 3] = 1.0 if ones_column else 0.0
        return out

    def scaled_keys(self, s: int, e: int) -> torch.Tensor:
        """[n, width] = [g w̃ | g b̃ | β | 1 | g | 0]: against X, y = g x̂ + β (or y - lse)."""
        if self._scaled is None:
            self._scaled = torch.zeros(self.chunk, self.width, dtype=self.dtype, device=self.device)
        D, out = self.dim, self._scaled[: e - s]
        gain, bias = self.affine(s, e)
        torch.sub(self.w2[s:e], self.w_mean, out=out[:, :D]).mul_(gain[:, None])
        out[:, D].copy_(self.b2[s:e]).sub_(self.b_mean).mul_(gain)
        out[:, D + 1].copy_(bias)
        out[:, D + 2] = 1.0
        out[:, D + 3].copy_(gain)
        return out

    def values(self, s: int, e: int) -> torch.Tensor:  # [n, D]
        if self._values is None:
            return self.e_text[s:e]
        return self._values[: e - s].copy_(self.e_text[s:e])

    def affine(self, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:  # LN2's gain and bias, [n] each
        return self.ln_weight[s:e].to(self.dtype), self.ln_bias[s:e].to(self.dtype)


def _queries(x: torch.Tensor, r: torch.Tensor, width: int, lse: torch.Tensor | None = None) -> torch.Tensor:
    """X [T, width] = [r h | r | 1 | -lse (or 0) | 0]."""
    T, D = x.shape
    out = torch.zeros(T, width, dtype=x.dtype, device=x.device)
    torch.mul(x, r[:, None], out=out[:, :D])
    out[:, D] = r
    out[:, D + 1] = 1.0
    if lse is not None:
        torch.neg(lse, out=out[:, D + 2])
    return out


def _statistics(x: torch.Tensor, vocab: _Vocab, strategy: str, buf: torch.Tensor):
    """Per-token variance of the logits [T] (and the Gram matrix [D+1, D+1] for "gram" and "hybrid")."""
    D = vocab.dim
    x1 = _queries(x, torch.ones_like(x[:, 0]), vocab.width)  # [h | 1 | 1 | 0 | 0]: x1 · keys = c (centred logits)
    if strategy in ("gram", "hybrid"):
        gram = torch.zeros(D + 1, D + 1, dtype=x.dtype, device=x.device)
        # G is symmetric: only the blocks on and above the diagonal are multiplied (about half the work).
        blocks = [(i, min(i + GRAM_BLOCK, D + 1)) for i in range(0, D + 1, GRAM_BLOCK)]
        for s, e in vocab.ranges:
            k = vocab.keys(s, e)
            for a0, a1 in blocks:  # block row [a0, a1), from its diagonal block to the right
                gram[a0:a1, a0:].addmm_(k[:, a0:a1].t(), k[:, a0 : D + 1])
        for a0, a1 in blocks[1:]:  # mirror the upper triangle
            gram[a0:a1, :a0] = gram[:a0, a0:a1].t()
        xg = x1[:, : D + 1]
        return ((xg @ gram) * xg).sum(1).div_(vocab.size).clamp_min_(0), gram
    sq = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for s, e in vocab.ranges:
        c = torch.mm(x1, vocab.keys(s, e).t(), out=buf[:, : e - s])  # centred logits [T, n]
        sq += torch.linalg.vector_norm(c, dim=1).square_()  # one read of c
    return sq.div_(vocab.size), None


def _prepare(h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy):
    dtype = _compute_dtype(h, w2, *([] if e_text is None else [e_text]))
    x = h.reshape(-1, h.shape[-1]).to(dtype)  # [T, D]
    vocab = _Vocab(w2, b2, ln_weight, ln_bias, e_text, chunk, dtype)
    strategy = resolve(strategy, vocab.dim, x.shape[0])
    bufs = torch.empty(3, x.shape[0], vocab.chunk, dtype=dtype, device=x.device)  # chunk workspace
    var, gram = _statistics(x, vocab, strategy, bufs[0])
    r = torch.rsqrt(var + eps)  # [T]
    return vocab, strategy, bufs, x, r, gram


def _softmax_pass(X: torch.Tensor, vocab: _Vocab, bufs: torch.Tensor, values: bool, track_q: bool):
    """One pass over the vocabulary with an online softmax. Returns the log-sum-exp of y [T], and when asked
    out = Σ p e_v [T, D], Q = Σ g p x̂ e_v [T, D] and Σ g p x̂ [T] (normalised by the softmax's sum)."""
    T, D, dtype, device = X.shape[0], vocab.dim, vocab.dtype, X.device
    m = torch.full((T,), -float("inf"), dtype=dtype, device=device)  # running max of y
    denom = torch.zeros(T, dtype=dtype, device=device)  # running Σ exp(y - m)
    acc = torch.zeros(T, D, dtype=dtype, device=device) if values else None  # running Σ exp(y - m) e_v
    q = torch.zeros(T, D, dtype=dtype, device=device) if track_q else None  # running Σ g exp(y - m) x̂ e_v
    q_sum = torch.zeros(T, dtype=dtype, device=device) if track_q else None  # running Σ g exp(y - m) x̂
    for s, e in vocab.ranges:
        n = e - s
        y = torch.mm(X, vocab.scaled_keys(s, e).t(), out=bufs[0, :, :n])  # y = g x̂ + β [T, n]
        m_new = torch.maximum(m, y.amax(1))
        alpha = torch.exp(m - m_new)  # rescales what was accumulated under the old max
        if track_q:
            p = torch.sub(y, m_new[:, None], out=bufs[1, :, :n]).exp_()  # keeps y for g x̂ = y - β
        else:
            p = y.sub_(m_new[:, None]).exp_()  # unnormalised probabilities [T, n]
        denom.mul_(alpha).add_(p.sum(1))
        if values:
            e_chunk = vocab.values(s, e)
            acc.mul_(alpha[:, None]).addmm_(p, e_chunk)
        if track_q:
            gpx = y.sub_(vocab.affine(s, e)[1]).mul_(p)  # g x̂ p
            q_sum.mul_(alpha).add_(gpx.sum(1))
            q.mul_(alpha[:, None]).addmm_(gpx, e_chunk)
        m = m_new
    lse = m + denom.log()
    norm = denom[:, None]
    return (
        lse,
        acc.div_(norm) if values else None,
        q.div_(norm) if track_q else None,
        q_sum.div_(denom) if track_q else None,
    )


def _forward(h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy, track_q: bool):
    """out [T, D] and what the backward pass needs: strategy, r, lse and (Q, Σ g p x̂) or (Gram,)."""
    with torch.autocast(h.device.type, enabled=False):
        vocab, strategy, bufs, x, r, gram = _prepare(h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy)
        track_q = track_q and strategy in ("stream", "hybrid")
        lse, out, q, q_sum = _softmax_pass(_queries(x, r, vocab.width), vocab, bufs, values=True, track_q=track_q)
    return out, strategy, r, lse, (q, q_sum) if track_q else (gram,) if strategy == "gram" else ()


class _AlignAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy):
        track_q = any(ctx.needs_input_grad[:3])  # b (through Q) feeds dh, dW2, db2
        out, strategy, r, lse, extra = _forward(h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy, track_q)
        ctx.save_for_backward(h, w2, b2, ln_weight, ln_bias, e_text, r, lse, out, *extra)
        ctx.config = (chunk, strategy)
        return out.reshape(h.shape).to(e_text.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        h, w2, b2, ln_weight, ln_bias, e_text, r, lse, out, *extra = ctx.saved_tensors
        chunk, strategy = ctx.config
        need = ctx.needs_input_grad[:6]
        with torch.autocast(h.device.type, enabled=False):
            vocab = _Vocab(w2, b2, ln_weight, ln_bias, e_text, chunk, r.dtype)
            x = h.reshape(-1, vocab.dim).to(r.dtype)
            dout = grad_out.reshape(x.shape).to(r.dtype)
            backward = _backward_gram if strategy == "gram" else _backward_stream
            grads = backward(vocab, x, r, lse, out, dout, extra, need)
        return (
            grads[0].reshape(h.shape).to(h.dtype) if grads[0] is not None else None,
            *(
                g.to(t.dtype) if g is not None else None
                for g, t in zip(grads[1:], (w2, b2, ln_weight, ln_bias, e_text))
            ),
            None,
            None,
            None,
        )


def _backward_gram(vocab: _Vocab, x, r, lse, out, dout, extra, need):
    """Per chunk: y - lse and dout·Eᵀ - δ as products, p and dy in three sweeps, then dE = pᵀ dout,
    dy · Kg (dh, b, a) and dyᵀ · X (dW2, db2, dg, dβ); the b-terms of dh and [dW2, db2] afterwards."""
    need_h, need_w2, need_b2, need_g, need_beta, need_e = need
    (gram,) = extra
    T, D, V, dtype, device = x.shape[0], vocab.dim, vocab.size, vocab.dtype, x.device
    need_z = need_h or need_w2 or need_b2  # anything that flows through the logits
    need_dw = need_w2 or need_b2 or need_g or need_beta  # anything from dyᵀ · X
    X = _queries(x, r, vocab.width, lse)  # [r h | r | 1 | -lse | 0]
    bufs = torch.empty(2, T, vocab.chunk, dtype=dtype, device=device)
    new = dict(dtype=dtype, device=device)
    delta = (dout * out).sum(1)  # [T], Σ_v p_v (dout · e_v)
    dh_acc = torch.zeros(T, vocab.width, **new) if need_z else None  # Σ_v dy_tv [g w̃ | g b̃ | β | 1 | g]
    dw_buf = torch.empty(vocab.chunk, vocab.width, **new) if need_dw else None
    dw2 = torch.empty(V, D, **new) if need_w2 else None
    db2 = torch.empty(V, **new) if need_b2 else None
    dg = torch.empty(V, **new) if need_g else None
    dbeta = torch.empty(V, **new) if need_beta else None
    de = torch.empty(V, D, **new) if need_e else None
    for s, e in vocab.ranges:
        n = e - s
        kg = vocab.scaled_keys(s, e)
        p = torch.mm(X, kg.t(), out=bufs[0, :, :n]).exp_()  # exp(y - lse) [T, n], recomputed
        values = vocab.values(s, e)
        if need_e:
            torch.mm(p.t(), dout, out=de[s:e])
        if not (need_z or need_dw):
            continue
        dy = torch.mm(dout, values.t(), out=bufs[1, :, :n]).sub_(delta[:, None]).mul_(p)  # [T, n]
        if need_z:
            dh_acc.addmm_(dy, kg)
        if need_dw:
            dw = torch.mm(dy.t(), X, out=dw_buf[:n])  # Σ_t dy_tv [r h | r | 1 | -lse] [n, width]
            gain = vocab.affine(s, e)[0]
            if need_w2:
                torch.mul(dw[:, :D], gain[:, None], out=dw2[s:e])
            if need_b2:
                torch.mul(dw[:, D], gain, out=db2[s:e])
            if need_beta:
                dbeta[s:e].copy_(dw[:, D + 1])
            if need_g:  # dg_v = Σ_t dy_tv x̂_tv = k_v · Σ_t dy_tv r_t x_t
                k = vocab.keys(s, e)[:, : D + 1]
                torch.sum(k.mul_(dw[:, : D + 1]), 1, out=dg[s:e])
    dh = None
    if need_z:
        a = dh_acc[:, D + 3] / V  # [T], mean_v dx̂
        b = (X[:, : D + 1] * dh_acc[:, : D + 1]).sum(1).div_(V)  # [T], mean_v dx̂ x̂
        xr = X[:, : D + 1]  # r [h, 1]
        if need_h:  # the a-term vanishes: Σ_v w̃_v = 0
            dh = dh_acc[:, :D].mul_(r[:, None]).sub_((xr @ gram[:, :D]).mul_((r * b)[:, None]))
        if need_w2 or need_b2:
            m_corr = xr.t() @ (xr * b[:, None])  # [D+1, D+1]
            for s, e in vocab.ranges:  # b-term of [dW2, db2]: -[W̃, b̃] · M
                k = vocab.keys(s, e)[:, : D + 1]
                if need_w2:
                    dw2[s:e].addmm_(k, m_corr[:, :D], alpha=-1)
                if need_b2:
                    db2[s:e].addmv_(k, m_corr[:, D], alpha=-1)
            if need_w2:
                dw2.sub_(a @ X[:, :D])  # a-term: Σ_t r a h
            if need_b2:
                db2.sub_(a @ r)
    return dh, dw2, db2, dg, dbeta, de


def _backward_stream(vocab: _Vocab, x, r, lse, out, dout, extra, need):
    """Per chunk: x̂ as a product, p, dy and dz̃ = g dy - b x̂ (b known from Q) in sweeps, then dE = pᵀ dout,
    dz̃ · k (dh, a) and dz̃ᵀ · X (dW2, db2)."""
    need_h, need_w2, need_b2, need_g, need_beta, need_e = need
    T, D, V, dtype, device = x.shape[0], vocab.dim, vocab.size, vocab.dtype, x.device
    need_z = need_h or need_w2 or need_b2
    X = _queries(x, r, vocab.width)  # [r h | r | 1 | 0 | 0]
    bufs = torch.empty(3, T, vocab.chunk, dtype=dtype, device=device)
    new = dict(dtype=dtype, device=device)
    delta = (dout * out).sum(1)  # [T]
    if need_z:
        q, q_sum = extra
        b = ((q * dout).sum(1) - delta * q_sum).div_(V)  # [T], mean_v dx̂ x̂
    dh_acc = torch.zeros(T, vocab.width, **new) if need_z else None  # Σ_v dz̃ [w̃ | b̃ | 0 | 0 | 1]
    dw_buf = torch.empty(vocab.chunk, vocab.width, **new) if (need_w2 or need_b2) else None
    dw2 = torch.empty(V, D, **new) if need_w2 else None
    db2 = torch.empty(V, **new) if need_b2 else None
    dg = torch.empty(V, **new) if need_g else None
    dbeta = torch.empty(V, **new) if need_beta else None
    de = torch.empty(V, D, **new) if need_e else None
    lse_col = lse[:, None]
    for s, e in vocab.ranges:
        n = e - s
        gain, bias = vocab.affine(s, e)
        keys = vocab.keys(s, e, ones_column=True)
        xhat = torch.mm(X, keys.t(), out=bufs[0, :, :n])  # [T, n], recomputed (X's ones meet the keys' zeros)
        p = torch.addcmul(bias, xhat, gain, out=bufs[1, :, :n]).sub_(lse_col).exp_()
        values = vocab.values(s, e)
        if need_e:
            torch.mm(p.t(), dout, out=de[s:e])
        if not (need_z or need_g or need_beta):
            continue
        dy = torch.mm(dout, values.t(), out=bufs[2, :, :n]).sub_(delta[:, None]).mul_(p)  # [T, n]
        if need_beta:
            torch.sum(dy, 0, out=dbeta[s:e])
        if need_g:
            torch.sum(torch.mul(dy, xhat, out=bufs[1, :, :n]), 0, out=dg[s:e])  # p is no longer needed
        if not need_z:
            continue
        dz = dy.mul_(gain).addcmul_(xhat, b[:, None], value=-1)  # dx̂ - b x̂; dz = r (this - a)
        dh_acc.addmm_(dz, keys)
        if need_w2 or need_b2:
            dw = torch.mm(dz.t(), X, out=dw_buf[:n])  # Σ_t dz̃_tv [r h | r | ...]
            if need_w2:
                dw2[s:e].copy_(dw[:, :D])
            if need_b2:
                db2[s:e].copy_(dw[:, D])
    dh = None
    if need_z:
        a = dh_acc[:, D + 3] / V  # Σ_v dz̃ = Σ_v dx̂ (Σ_v x̂ = 0)
        if need_h:
            dh = dh_acc[:, :D].mul_(r[:, None])  # the a-term vanishes: Σ_v w̃_v = 0
        if need_w2:
            dw2.sub_(a @ X[:, :D])
        if need_b2:
            db2.sub_(a @ r)
    return dh, dw2, db2, dg, dbeta, de


# ---------------------------------------------------------------- statistics of the distribution, streamed


class VocabHead(NamedTuple):
    """ALIGN's map onto the vocabulary, LN2(h · W2ᵀ + b2): W2 [V, D], b2 [V], LN2's gain and bias [V] and eps."""

    w2: Tensor
    b2: Tensor
    ln_weight: Tensor
    ln_bias: Tensor
    eps: float

    @classmethod
    def of(cls, linear: torch.nn.Linear, norm: torch.nn.LayerNorm) -> VocabHead:
        return cls(linear.weight, linear.bias, norm.weight, norm.bias, norm.eps)


@torch.no_grad()
def vocab_pass(
    h: Tensor, head: VocabHead, chunk_size: int = 4096, targets: Tensor | None = None
) -> dict[str, torch.Tensor]:
    """What a probe needs of p = softmax(LN2(h · W2ᵀ + b2)), h: [..., D], without the [..., V] matrix:

    prob_sum [V] (Σ over tokens of p, to be averaged over many tokens), top_prob and top_id [...] (each
    token's largest probability and its id, the first on ties), entropy [...] (nats), and with `targets`
    (ids [...]) target_prob [...], each token's probability of its target. Float32 (float64 for float64
    inputs); two passes over the vocabulary."""
    _check(chunk_size, "auto")
    with torch.autocast(h.device.type, enabled=False):
        w2, b2, ln_weight, ln_bias, eps = head
        vocab, _, bufs, x, r, _ = _prepare(h, w2, b2, ln_weight, ln_bias, None, eps, chunk_size, "auto")
        X = _queries(x, r, vocab.width)
        lse = _softmax_pass(X, vocab, bufs, values=False, track_q=False)[0]  # 1. log-sum-exp [T]
        X[:, vocab.dim + 2] = -lse  # now X · scaled keys = log p
        prob_sum = torch.empty(vocab.size, dtype=vocab.dtype, device=x.device)
        top = torch.full_like(lse, -float("inf"))  # max_v log p
        top_id = torch.zeros(lse.shape, dtype=torch.long, device=x.device)
        entropy = torch.zeros_like(lse)
        flat_targets = targets.reshape(-1).to(x.device) if targets is not None else None
        target_prob = torch.zeros_like(lse) if targets is not None else None
        for s, e in vocab.ranges:  # 2. every statistic, chunk by chunk
            log_p = torch.mm(X, vocab.scaled_keys(s, e).t(), out=bufs[0, :, : e - s])  # [T, n]
            best, where = log_p.max(1)
            better = best > top  # strict: the first id wins ties, as argmax does
            top = torch.where(better, best, top)
            top_id = torch.where(better, where + s, top_id)
            p = torch.exp(log_p, out=bufs[1, :, : e - s])
            entropy -= (p * log_p).sum(1)
            torch.sum(p, 0, out=prob_sum[s:e])
            if flat_targets is not None:
                inside = (flat_targets >= s) & (flat_targets < e)
                rows = inside.nonzero().squeeze(1)
                target_prob[rows] = p[rows, flat_targets[rows] - s]
    shape = h.shape[:-1]
    out = {
        "prob_sum": prob_sum,
        "top_prob": top.exp().reshape(shape),
        "top_id": top_id.reshape(shape),
        "entropy": entropy.reshape(shape),
    }
    if target_prob is not None:
        out["target_prob"] = target_prob.reshape(shape)
    return out


@torch.no_grad()
def vocab_stats(h: Tensor, head: VocabHead, chunk_size: int = 4096) -> dict:
    """`alignbench.connector.distribution_stats` of softmax(LN2(h · W2ᵀ + b2)) without the [T, V] matrix:
    mean top probability, mean entropy (nats), entries whose mean probability exceeds 1e-6, and V."""
    out = vocab_pass(h, head, chunk_size)
    mean_prob = out["prob_sum"] / out["top_prob"].numel()
    return {
        "mean_top_prob": out["top_prob"].mean().item(),
        "mean_entropy": out["entropy"].mean().item(),
        "support_1e-6": int((mean_prob > 1e-6).sum().item()),
        "size": mean_prob.numel(),
    }


@torch.no_grad()
def normalised_logits(h: Tensor, head: VocabHead, ids: Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """LN2(h · W2ᵀ + b2)[..., ids]: the LayerNorm over the whole vocabulary, the logits of `ids` only
    ([..., len(ids)], float32 or float64). For ALIGN restricted to a few tokens (the pruning probe)."""
    _check(chunk_size, "auto")
    with torch.autocast(h.device.type, enabled=False):
        w2, b2, ln_weight, ln_bias, eps = head
        vocab, _, _, x, r, _ = _prepare(h, w2, b2, ln_weight, ln_bias, None, eps, chunk_size, "auto")
        ids = ids.to(w2.device)
        sub = _Vocab(w2[ids], b2[ids], ln_weight[ids], ln_bias[ids], None, max(1, len(ids)), vocab.dtype)
        sub.w_mean, sub.b_mean = vocab.w_mean, vocab.b_mean  # centred on the whole vocabulary's mean
        logits = _queries(x, r, vocab.width) @ sub.scaled_keys(0, len(ids)).t()  # [T, k]
    return logits.reshape(*h.shape[:-1], len(ids))
