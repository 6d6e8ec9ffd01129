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

With c_tv = h_t · w̃_v + b̃_v the centred logits, x̂ = r · c with r = (var + eps)^-1/2, y = g ⊙ x̂ + β
(LN2's affine), p = softmax(y), out = p · E, the gradients are, per token (δ = dout · out):

    dE = pᵀ · dout,   dy = p ⊙ (dout · Eᵀ - δ),   dβ = Σ_t dy,   dg = Σ_t dy ⊙ x̂,   dx̂ = g ⊙ dy
    dz = r (dx̂ - a - b x̂),   a = mean_v dx̂,   b = mean_v dx̂ ⊙ x̂
    dh = dz · W2 = dz · W̃ (Σ_v dz = 0),   dW2 = dzᵀ · h,   db2 = Σ_t dz

a and b are known only after the whole vocabulary was seen. The a-term is constant over v, so it drops
out of dh and is one rank-1 correction of dW2 and db2. The b-term is handled by one of two strategies,
chosen by cost (one "pass" below is a [T, V] x D matrix product, 2·T·V·D flops):

* "gram" (D < T): var from the Gram matrix G = [W̃, b̃]ᵀ[W̃, b̃] ([D+1, D+1], V·D² flops, D/T of a pass);
  afterwards the b-term of dh is -r_t b_t Σ_v x̂_tv w̃_v = -r_t² b_t ([h_t, 1] G)[:D], and that of
  [dW2, db2] is -[W̃, b̃] · M with M = Σ_t b_t r_t² [h_t, 1]ᵀ[h_t, 1] (another D/T of a pass).
* "stream" (D ≥ T): var from one extra pass over the logits; the forward pass also accumulates
  Q_t = Σ_v g_v p_tv x̂_tv e_v, so that b_t = (Q_t · dout_t - δ_t Σ_v g_v p_tv x̂_tv) / V is known before
  the backward pass and dz is exact chunk by chunk (one extra pass).

Forward: 2 passes + the statistics; backward: 5 passes (the recomputed logits, dout·Eᵀ, dE, dh, dW2).
In all 7 + 2·D/T passes ("gram") or 9 ("stream"), against 6 for the naive form: the chunked form trades
some arithmetic for never writing, reading or keeping a [T, V] matrix.
Math runs in float32 (float64 if an input is float64); bf16 or fp16 inputs are upcast chunk by chunk.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

STRATEGIES = ("auto", "gram", "stream")


def align_attention(h: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, ln_weight: torch.Tensor,
                    ln_bias: torch.Tensor, eps: float, e_text: torch.Tensor, chunk_size: int = 4096,
                    strategy: str = "auto") -> torch.Tensor:
    """softmax(layer_norm(h @ w2ᵀ + b2, (V,), ln_weight, ln_bias, eps)) @ e_text, h: [..., D] -> [..., D].

    Exact in value and gradient (h, w2, b2, ln_weight, ln_bias, e_text) up to rounding; the output has
    e_text's dtype, the gradients their inputs' dtypes."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    inputs = (h, w2, b2, ln_weight, ln_bias, e_text)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs)):  # inference: nothing to keep
        out = _forward(*inputs, float(eps), int(chunk_size), strategy, track_q=False)[0]
        return out.reshape(h.shape).to(e_text.dtype)
    return _AlignAttention.apply(*inputs, float(eps), int(chunk_size), strategy)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class _Vocab:
    """The vocabulary side, one chunk at a time, in the compute dtype: keys [W̃, b̃] and values E_text."""

    def __init__(self, w2, b2, ln_weight, ln_bias, e_text, chunk: int, dtype: torch.dtype):
        self.w2, self.b2, self.ln_weight, self.ln_bias, self.e_text = w2, b2, ln_weight, ln_bias, e_text
        self.size, self.dim = w2.shape
        self.chunk, self.dtype = min(chunk, self.size), dtype
        self.ranges = [(s, min(s + chunk, self.size)) for s in range(0, self.size, chunk)]
        w_sum = torch.zeros(self.dim, dtype=dtype, device=w2.device)
        for s, e in self.ranges:
            w_sum += w2[s:e].to(dtype).sum(0)
        self.w_mean = w_sum / self.size  # [D]
        self.b_mean = b2.to(dtype).mean()
        self._keys = torch.empty(self.chunk, self.dim + 1, dtype=dtype, device=w2.device)
        upcast = e_text is not None and e_text.dtype != dtype
        self._values = torch.empty(self.chunk, self.dim, dtype=dtype, device=w2.device) if upcast else None

    def keys(self, s: int, e: int) -> torch.Tensor:  # [n, D+1] = [W2 - mean row, b2 - mean(b2)]
        out = self._keys[: e - s]
        torch.sub(self.w2[s:e], self.w_mean, out=out[:, : self.dim])
        out[:, self.dim].copy_(self.b2[s:e]).sub_(self.b_mean)
        return out

    def values(self, s: int, e: int) -> torch.Tensor:  # [n, D]
        if self._values is None:
            return self.e_text[s:e]
        return self._values[: e - s].copy_(self.e_text[s:e])

    def affine(self, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:  # LN2's gain and bias, [n] each
        return self.ln_weight[s:e].to(self.dtype), self.ln_bias[s:e].to(self.dtype)


def _statistics(x1: torch.Tensor, vocab: _Vocab, strategy: str, buf: torch.Tensor):
    """Per-token variance of the logits [T] (and the Gram matrix [D+1, D+1] for strategy "gram")."""
    if strategy == "gram":
        gram = torch.zeros(vocab.dim + 1, vocab.dim + 1, dtype=x1.dtype, device=x1.device)
        for s, e in vocab.ranges:
            k = vocab.keys(s, e)
            gram.addmm_(k.t(), k)
        return ((x1 @ gram) * x1).sum(1).div_(vocab.size).clamp_min_(0), gram
    sq = torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)
    for s, e in vocab.ranges:
        c = torch.mm(x1, vocab.keys(s, e).t(), out=buf[:, : e - s])  # centred logits [T, n]
        sq += torch.linalg.vector_norm(c, dim=1).square_()  # one read of c
    return sq.div_(vocab.size), None


def _prepare(h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy):
    dtype = _compute_dtype(h, w2, *([] if e_text is None else [e_text]))
    x = h.reshape(-1, h.shape[-1]).to(dtype)  # [T, D]
    vocab = _Vocab(w2, b2, ln_weight, ln_bias, e_text, chunk, dtype)
    if strategy == "auto":
        strategy = "gram" if vocab.dim < x.shape[0] else "stream"
    bufs = torch.empty(3, x.shape[0], vocab.chunk, dtype=dtype, device=x.device)  # chunk workspace
    x1 = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)  # [T, D+1] = [h, 1]
    var, gram = _statistics(x1, vocab, strategy, bufs[0])
    r = torch.rsqrt(var + eps)  # [T]
    xr = x1.mul_(r[:, None])  # [T, D+1] = [r h, r]: normalised logits x̂ = xr · keysᵀ
    return vocab, strategy, bufs, xr, r, gram


def _softmax_pass(xr: torch.Tensor, vocab: _Vocab, bufs: torch.Tensor, values: bool, track_q: bool):
    """One pass over the vocabulary with an online softmax. Returns the log-sum-exp of y [T], and when asked
    out = Σ p e_v [T, D], Q = Σ g p x̂ e_v [T, D] and Σ g p x̂ [T] (normalised by the softmax's sum)."""
    T, D, dtype, device = xr.shape[0], vocab.dim, vocab.dtype, xr.device
    m = torch.full((T,), -float("inf"), dtype=dtype, device=device)  # running max of y
    denom = torch.zeros(T, dtype=dtype, device=device)  # running Σ exp(y - m)
    acc = torch.zeros(T, D, dtype=dtype, device=device) if values else None  # running Σ exp(y - m) e_v
    q = torch.zeros(T, D, dtype=dtype, device=device) if track_q else None  # running Σ g exp(y - m) x̂ e_v
    q_sum = torch.zeros(T, dtype=dtype, device=device) if track_q else None  # running Σ g exp(y - m) x̂
    for s, e in vocab.ranges:
        gain, bias = vocab.affine(s, e)
        xhat = torch.mm(xr, vocab.keys(s, e).t(), out=bufs[0, :, : e - s])  # [T, n]
        y = torch.addcmul(bias, xhat, gain, out=bufs[1, :, : e - s])  # [T, n]
        m_new = torch.maximum(m, y.amax(1))
        alpha = torch.exp(m - m_new)  # rescales what was accumulated under the old max
        p = y.sub_(m_new[:, None]).exp_()  # unnormalised probabilities [T, n]
        denom.mul_(alpha).add_(p.sum(1))
        if values:
            e_chunk = vocab.values(s, e)
            acc.mul_(alpha[:, None]).addmm_(p, e_chunk)
        if track_q:
            gpx = xhat.mul_(p).mul_(gain)
            q_sum.mul_(alpha).add_(gpx.sum(1))
            q.mul_(alpha[:, None]).addmm_(gpx, e_chunk)
        m = m_new
    lse = m + denom.log()
    norm = denom[:, None]
    return lse, acc.div_(norm) if values else None, q.div_(norm) if track_q else None, \
        q_sum.div_(denom) if track_q else None


def _forward(h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy, track_q: bool):
    """out [T, D] and what the backward pass needs: strategy, xr, r, lse and (Q, Σ g p x̂) or (Gram,)."""
    with torch.autocast(h.device.type, enabled=False):
        vocab, strategy, bufs, xr, r, gram = _prepare(h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy)
        track_q = track_q and strategy == "stream"
        lse, out, q, q_sum = _softmax_pass(xr, vocab, bufs, values=True, track_q=track_q)
    return out, strategy, xr, r, lse, (q, q_sum) if track_q else (gram,) if strategy == "gram" else ()


class _AlignAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy):
        track_q = any(ctx.needs_input_grad[:3])  # b (through Q) feeds dh, dW2, db2
        out, strategy, xr, r, lse, extra = _forward(h, w2, b2, ln_weight, ln_bias, e_text, eps, chunk, strategy,
                                                    track_q)
        ctx.save_for_backward(w2, b2, ln_weight, ln_bias, e_text, xr, r, lse, out, *extra)
        ctx.config = (h.shape, h.dtype, chunk, strategy)
        return out.reshape(h.shape).to(e_text.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        w2, b2, ln_weight, ln_bias, e_text, xr, r, lse, out, *extra = ctx.saved_tensors
        shape, h_dtype, chunk, strategy = ctx.config
        need_h, need_w2, need_b2, need_g, need_beta, need_e = ctx.needs_input_grad[:6]
        need_z = need_h or need_w2 or need_b2  # anything that flows through the logits
        with torch.autocast(xr.device.type, enabled=False):
            dtype = xr.dtype
            vocab = _Vocab(w2, b2, ln_weight, ln_bias, e_text, chunk, dtype)
            T, D, V = xr.shape[0], vocab.dim, vocab.size
            bufs = torch.empty(3, T, vocab.chunk, dtype=dtype, device=xr.device)
            dout = grad_out.reshape(T, D).to(dtype)
            delta = (dout * out).sum(1)  # [T], Σ_v p_v (dout · e_v)
            if strategy == "stream" and need_z:
                q, q_sum = extra
                b_coef = ((q * dout).sum(1) - delta * q_sum).div_(V)  # [T]
            new = dict(dtype=dtype, device=xr.device)
            a_sum, b_sum = torch.zeros(T, **new), torch.zeros(T, **new)
            dh_acc = torch.zeros(T, D, **new) if need_h else None
            dw2 = torch.empty(V, D, **new) if need_w2 else None
            db2 = torch.empty(V, **new) if need_b2 else None
            dg = torch.empty(V, **new) if need_g else None
            dbeta = torch.empty(V, **new) if need_beta else None
            de = torch.empty(V, D, **new) if need_e else None
            for s, e in vocab.ranges:
                n = e - s
                gain, bias = vocab.affine(s, e)
                keys = vocab.keys(s, e)
                xhat = torch.mm(xr, keys.t(), out=bufs[0, :, :n])  # [T, n], recomputed
                p = torch.addcmul(bias, xhat, gain, out=bufs[1, :, :n]).sub_(lse[:, None]).exp_()
                values = vocab.values(s, e)
                if need_e:
                    torch.mm(p.t(), dout, out=de[s:e])
                if not (need_z or need_g or need_beta):
                    continue
                dy = torch.mm(dout, values.t(), out=bufs[2, :, :n]).sub_(delta[:, None]).mul_(p)  # [T, n]
                if need_beta:
                    torch.sum(dy, 0, out=dbeta[s:e])
                if need_g or (need_z and strategy == "gram"):
                    dyx = torch.mul(dy, xhat, out=bufs[1, :, :n])  # p is no longer needed
                    if need_g:
                        torch.sum(dyx, 0, out=dg[s:e])
                    if need_z and strategy == "gram":
                        b_sum.add_(dyx @ gain)  # Σ_v dx̂ x̂
                if not need_z:
                    continue
                dxhat = dy.mul_(gain)
                a_sum.add_(dxhat.sum(1))
                if strategy == "stream":
                    dxhat.addcmul_(xhat, b_coef[:, None], value=-1)  # the b-term, known up front
                # dz = r ⊙ dxhat (a-term and, for "gram", b-term corrected below)
                if need_h:
                    dh_acc.addmm_(dxhat, keys[:, :D])
                if need_w2:
                    torch.mm(dxhat.t(), xr[:, :D], out=dw2[s:e])
                if need_b2:
                    torch.mv(dxhat.t(), r, out=db2[s:e])
            grads = [None] * 6
            if need_z:
                a = a_sum.div_(V)  # [T]
                if need_h:
                    dh = dh_acc.mul_(r[:, None])  # the a-term vanishes: Σ_v w̃_v = 0
                    if strategy == "gram":
                        (gram,) = extra
                        b = b_sum / V
                        dh.sub_((xr @ gram[:, :D]).mul_((r * b)[:, None]))
                    grads[0] = dh.reshape(shape).to(h_dtype)
                if need_w2 or need_b2:
                    if strategy == "gram":
                        b = b_sum / V
                        m_corr = xr.t() @ (xr * b[:, None])  # [D+1, D+1]
                        for s, e in vocab.ranges:  # b-term of [dW2, db2]: -[W̃, b̃] · M
                            keys = vocab.keys(s, e)
                            if need_w2:
                                dw2[s:e].addmm_(keys, m_corr[:, :D], alpha=-1)
                            if need_b2:
                                db2[s:e].addmv_(keys, m_corr[:, D], alpha=-1)
                    if need_w2:
                        grads[1] = dw2.sub_(a @ xr[:, :D]).to(w2.dtype)  # a-term: Σ_t r a h
                    if need_b2:
                        grads[2] = db2.sub_(a @ r).to(b2.dtype)
            if need_g:
                grads[3] = dg.to(ln_weight.dtype)
            if need_beta:
                grads[4] = dbeta.to(ln_bias.dtype)
            if need_e:
                grads[5] = de.to(e_text.dtype)
        return (*grads, None, None, None)


@torch.no_grad()
def vocab_stats(h: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, ln_weight: torch.Tensor,
                ln_bias: torch.Tensor, eps: float, chunk_size: int = 4096) -> dict:
    """`alignbench.connector.distribution_stats` of softmax(LN2(h · W2ᵀ + b2)) without the [T, V] matrix:
    mean top probability, mean entropy (nats), entries whose mean probability exceeds 1e-6, and V."""
    vocab, _, bufs, xr, _, _ = _prepare(h, w2, b2, ln_weight, ln_bias, None, eps, chunk_size, "auto")
    lse = _softmax_pass(xr, vocab, bufs, values=False, track_q=False)[0]  # 1. log-sum-exp [T]
    mean_prob = torch.empty(vocab.size, dtype=vocab.dtype, device=xr.device)
    top = torch.full_like(lse, -float("inf"))  # max_v y - lse
    entropy = torch.zeros_like(lse)
    for s, e in vocab.ranges:  # 2. top probability, entropy, each entry's mean probability
        gain, bias = vocab.affine(s, e)
        xhat = torch.mm(xr, vocab.keys(s, e).t(), out=bufs[0, :, : e - s])
        log_p = torch.addcmul(bias, xhat, gain, out=bufs[1, :, : e - s]).sub_(lse[:, None])  # [T, n]
        top = torch.maximum(top, log_p.amax(1))
        p = torch.exp(log_p, out=bufs[2, :, : e - s])
        entropy -= (p * log_p).sum(1)
        torch.mean(p, 0, out=mean_prob[s:e])
    return {"mean_top_prob": top.exp().mean().item(), "mean_entropy": entropy.mean().item(),
            "support_1e-6": int((mean_prob > 1e-6).sum().item()), "size": vocab.size}
