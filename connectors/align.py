"""ALIGN (AlignVLM, arXiv 2502.01341, Eq. 1-2):

    P = softmax(LN2(W2 · LN1(W1 · F)))        # [B, N, V], a distribution over the LLM vocabulary
    out = P · E_text                          # [B, N, D], E_text = the LLM's input-embedding matrix

W2 (D -> V) is initialised from the LLM's LM head; E_text is the LLM's own embedding matrix, read
live (never copied), so every visual token is a convex combination of text embeddings and E_text
trains exactly when the LLM trains. One token per patch.

`impl` chooses how out is computed: "naive" materialises P [B, N, V] (and keeps it for the backward
pass); "chunked" streams the vocabulary in chunks of `chunk_size` with an online softmax and recomputes
chunks in the backward pass (`alignbench.align_kernel`, exact, extra memory O(N·D + N·chunk));
"auto" uses chunked when the vocabulary is larger than one chunk and P would hold more than
`NAIVE_MAX_ENTRIES` entries; below that, P's few large matrix products are faster than streaming it.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from alignbench.align_kernel import VocabHead, align_attention, vocab_stats
from alignbench.connector import CONNECTORS, Connector, ConnectorContext, distribution_stats
from alignbench.errors import AlignBenchError

IMPLS = ("auto", "naive", "chunked")
# impl="auto": the naive form up to this many entries of P [B, N, V] (512 MiB per float32 copy). Where P fits, its
# few large matrix products are faster than the chunked kernel's streaming and recomputation (at V = 32,000 and
# 128,256 with T = 729 the naive pass was 1.4 times faster: results/bench/align_memory.md); at paper scale (16 pages
# x 729 patches x 128,256 tokens, 1.5 G entries) the chunked kernel's memory is what fits.
NAIVE_MAX_ENTRIES = 2**27


@CONNECTORS.register("align")
class AlignConnector(Connector):
    @dataclass
    class Config:
        init_w2_from_lm_head: bool = True  # the paper's initialisation
        # LN2 makes the logits invariant to the scale of W1 and W2, so the softmax's sharpness is set by
        # LN2's gain alone, which AdamW moves by about one learning rate per step. A larger rate for LN2's
        # affine parameters lets a brief run reach a peaked distribution (1.0 = one rate for all).
        ln2_lr_mult: float = 1.0
        # Initial gain of LN2: the softmax's inverse temperature at initialisation. With LayerNorm's default (1) a
        # brief run stalls (validation ANLS 10.7 on the DocVQA-like set); 0.03 starts nearly flat (every visual
        # token near the mean text embedding) and the answer loss sharpens it (87.6). Chosen on the validation
        # split with the same budget for every trial: results/tune.
        ln2_gain_init: float = 0.03
        impl: str = "auto"  # "naive", "chunked" or "auto" (chunked for a vocabulary beyond chunk_size and a large P)
        chunk_size: int = 4096  # vocabulary rows per chunk of the chunked implementation

        def __post_init__(self):
            if self.impl not in IMPLS:
                raise AlignBenchError(
                    f"connector option impl={self.impl!r} is not one of {', '.join(IMPLS)}; "
                    "pass e.g. --connector-arg impl=chunked"
                )
            for name in ("ln2_lr_mult", "ln2_gain_init"):
                if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                    raise AlignBenchError(f"connector option {name}={getattr(self, name)!r} must be positive")
            if self.chunk_size < 1:
                raise AlignBenchError(
                    f"connector option chunk_size={self.chunk_size} must be a positive integer "
                    "(vocabulary rows per chunk, e.g. 4096)"
                )

    def __init__(self, ctx: ConnectorContext, config: Config):
        super().__init__(ctx, config)
        vocab = ctx.vocab_size
        self.w1 = nn.Linear(ctx.vision_dim, ctx.llm_dim)
        self.ln1 = nn.LayerNorm(ctx.llm_dim)
        self.w2 = nn.Linear(ctx.llm_dim, vocab)
        self.ln2 = nn.LayerNorm(vocab)
        nn.init.constant_(self.ln2.weight, config.ln2_gain_init)
        if config.init_w2_from_lm_head:
            with torch.no_grad():
                self.w2.weight.copy_(ctx.llm.get_output_embeddings().weight[:vocab])
                self.w2.bias.zero_()
        self.on_llm_loaded(ctx.llm)

    def param_groups(self, lr: float) -> list[dict]:
        ln2 = list(self.ln2.parameters())
        rest = [p for n, p in self.named_parameters() if not n.startswith("ln2.")]
        return [{"params": rest, "lr": lr}, {"params": ln2, "lr": lr * self.config.ln2_lr_mult}]

    def on_llm_loaded(self, llm) -> None:
        # A plain attribute, not a submodule: E_text belongs to the LLM (saved and trained with it).
        self.__dict__["_text_embeddings"] = llm.get_input_embeddings()

    def chunked_for(self, features: torch.Tensor) -> bool:
        """Whether forward runs the chunked kernel on `features` [..., d] (resolves impl="auto")."""
        impl = self.config.impl
        if impl != "auto":
            return impl == "chunked"
        vocab = self.w2.out_features
        return vocab > self.config.chunk_size and features.shape[:-1].numel() * vocab > NAIVE_MAX_ENTRIES

    def vocab_distribution(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, d] -> [B, N, V]
        logits = self.ln2(self.w2(self.ln1(self.w1(features))))
        return torch.softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def diagnostics(self, features: torch.Tensor) -> dict:
        if self.chunked_for(features):  # the same statistics without the [B, N, V] matrix
            h = self.ln1(self.w1(features))  # [B, N, D]
            stats = vocab_stats(h, VocabHead.of(self.w2, self.ln2), self.config.chunk_size)
            return {"vocab_distribution": stats}
        return {"vocab_distribution": distribution_stats(self.vocab_distribution(features))}

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, d]
        e_text = self._text_embeddings.weight  # [V, D]
        if type(e_text).__name__ == "DTensor" or e_text.dim() != 2 or e_text.shape[0] < self.w2.out_features:
            # A sharded matrix (FSDP outside its unit's forward, DeepSpeed ZeRO-3) would mix shards into the output.
            raise AlignBenchError(
                f"ALIGN reads the LLM's input-embedding matrix, but it is sharded here "
                f"({type(e_text).__name__} of shape {tuple(e_text.shape)}); shard it in the same "
                "FSDP unit as the connector (AlignBench's --parallel fsdp does), or gather it first"
            )
        if self.chunked_for(features):
            h = self.ln1(self.w1(features))  # [B, N, D]
            return align_attention(
                h,
                self.w2.weight,
                self.w2.bias,
                self.ln2.weight,
                self.ln2.bias,
                self.ln2.eps,
                e_text,
                self.config.chunk_size,
            )  # [B, N, D]
        probs = self.vocab_distribution(features)  # [B, N, V]
        return probs.to(e_text.dtype) @ e_text  # [B, N, D]
