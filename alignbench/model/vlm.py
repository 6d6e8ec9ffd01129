"""One module composes vision tower, connector and LLM, with one merge path:

    [prompt prefix] + [visual tokens from the connector] + [text embeddings of prompt (+ answer)]  ->  LLM

The prefix is what the tokenizer's prompt format puts before the image (`alignbench.prompt.prompt_format`: a chat
model's header of the user turn, or a plain model's BOS; nothing for the embedded backbone). Images with
different numbers of tiles give different numbers of visual tokens: the connector runs once per patch count
and the shorter visual parts are left-padded (masked), so the text starts at the same position in every row.

Training loss is next-token cross-entropy on answer tokens only, and LM-head logits are computed
only at those positions. Generation is greedy from `inputs_embeds` with the KV cache, batched: each page's
prefix and visual tokens are prefilled once for all the questions about it, prompts are left-padded after them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect

import torch
from torch import nn

from ..backbones.base import Backbone, PatchBatch, vision_features
from ..connector import Connector
from ..errors import AlignBenchError
from ..prompt import prompt_format, stop_ids


class ConnectorContractError(AlignBenchError):
    """A connector's output does not match what it declares (tokens) or what the LLM reads (width)."""


def check_output(connector, features: torch.Tensor, tokens, llm_dim: int) -> None:
    """The connector contract, checked on every call (so on every patch count a tiled batch brings): `forward`
    maps [B, N, d] to a tensor [B, num_tokens(N), D] with D the LLM's width. One message naming the connector,
    what it declared and what it emitted; code, not `assert`, so it holds under `python -O`."""
    name = getattr(connector, "name", "") or type(connector).__name__
    batch, patches = features.shape[0], features.shape[1]
    expected = connector.num_tokens(patches)
    shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else None
    if shape is None or len(shape) != 3 or shape[0] != batch or shape[1] != expected or shape[2] != llm_dim:
        emitted = f"a tensor of shape {list(shape)}" if shape is not None else f"a {type(tokens).__name__}"
        raise ConnectorContractError(
            f"connector {name!r} emitted {emitted} for {patches} patches of {batch} image(s), but declares "
            f"num_tokens({patches}) = {expected} tokens of the LLM's width {llm_dim}: expected [{batch}, {expected}, "
            f"{llm_dim}]; fix its forward (project to ctx.llm_dim) or its num_tokens"
        )


class VLM(nn.Module):
    def __init__(self, backbone: Backbone, connector: Connector):
        super().__init__()
        self.vision = backbone.vision
        self.llm = backbone.llm
        self.connector = connector
        self.tokenizer = backbone.tokenizer

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return vision_features(self.vision, pixel_values)  # [B, N, d]

    def _connect(self, features: torch.Tensor) -> torch.Tensor:
        tokens = self.connector(features.to(self.connector_dtype))  # [B, T, D]
        check_output(self.connector, features, tokens, self.llm.get_input_embeddings().weight.shape[1])
        return tokens

    def visual_tokens(self, features: torch.Tensor | PatchBatch) -> torch.Tensor:
        """[B, T, D]; for a PatchBatch, see `visual_tokens_masked`."""
        return self.visual_tokens_masked(features)[0]

    def visual_tokens_masked(self, features: torch.Tensor | PatchBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual tokens [B, T, D] and their mask [B, T]. A PatchBatch (images with different tile counts) runs
        the connector once per patch count, each call checked against `num_tokens`, and left-pads the
        shorter outputs with masked zeros."""
        if not isinstance(features, PatchBatch):
            tokens = self._connect(features)
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
        parts = [(idx, self._connect(feats)) for idx, feats in features.groups()]
        longest = max(t.shape[1] for _, t in parts)
        first = parts[0][1]
        tokens = first.new_zeros(len(features), longest, first.shape[2])
        mask = torch.zeros(len(features), longest, dtype=torch.long, device=first.device)
        for idx, t in parts:
            tokens[idx, longest - t.shape[1] :] = t
            mask[idx, longest - t.shape[1] :] = 1
        return tokens, mask

    @contextlib.contextmanager
    def llm_in(self, dtype: torch.dtype | None):
        """The LLM's lower-precision floating-point weights and buffers upcast to `dtype` while the block runs,
        then cast back, which restores them exactly (every bfloat16 or float16 value is a float32 value): the same
        tensors, the same values, the same dtype, and never both copies of the weights in memory at once. None, a
        lower-precision `dtype` or sharded weights (DTensor) leave the LLM as it is. Yields the dtype the LLM
        computes in (that of its input embeddings)."""
        tensors = [*self.llm.parameters(), *self.llm.buffers()]
        sharded = any(type(t).__name__ == "DTensor" for t in tensors)
        cast: list[tuple[torch.Tensor, torch.dtype]] = []
        try:
            if dtype is not None and not sharded:
                with torch.no_grad():
                    for t in self._below(dtype):
                        cast.append((t, t.dtype))
                        t.data = t.data.to(dtype)
            yield self.llm.get_input_embeddings().weight.dtype
        finally:
            with torch.no_grad():
                for t, original in cast:
                    t.data = t.data.to(original)

    def upcast_bytes(self, dtype: torch.dtype) -> int:
        """The memory `llm_in(dtype)` adds while it runs."""
        return sum(t.numel() * (dtype.itemsize - t.dtype.itemsize) for t in self._below(dtype))

    def _below(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """The LLM's floating-point weights and buffers in a narrower dtype than `dtype`."""
        tensors = [*self.llm.parameters(), *self.llm.buffers()]
        return [t for t in tensors if t.is_floating_point() and t.dtype.itemsize < dtype.itemsize]

    @property
    def connector_dtype(self) -> torch.dtype:
        return next(self.connector.parameters()).dtype

    @property
    def prefix_ids(self) -> list[int]:
        return prompt_format(self.tokenizer).prefix

    @property
    def stop_ids(self) -> frozenset[int]:
        """Where an answer ends (`alignbench.prompt.stop_ids`)."""
        return stop_ids(self.tokenizer, self.llm)

    def merge(self, features, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The one merge path: [prefix] + visual tokens + text embeddings. Returns (embeds [B, S, D],
        mask [B, S], position of the first text token)."""
        visual, visual_mask = self.visual_tokens_masked(features)  # [B, T, D], [B, T]
        embed = self.llm.get_input_embeddings()
        text = embed(input_ids)  # [B, L, D]
        parts, masks = [visual.to(text.dtype), text], [visual_mask, attention_mask]
        if self.prefix_ids:
            prefix = torch.tensor(self.prefix_ids, device=input_ids.device).expand(input_ids.shape[0], -1)
            parts.insert(0, embed(prefix))  # [B, P, D]
            masks.insert(0, torch.ones_like(prefix))
        embeds = torch.cat(parts, dim=1)  # [B, P + T + L, D]
        mask = torch.cat(masks, dim=1)  # [B, P + T + L]
        return embeds, mask, embeds.shape[1] - text.shape[1]

    def _text_hidden(self, features, input_ids, attention_mask) -> torch.Tensor:
        """The LLM's last hidden states at the text positions [B, L, D]."""
        embeds, mask, text_start = self.merge(features, input_ids, attention_mask)
        # Positions count real tokens only, so left-padded visual parts shift nothing (as in generation).
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        hidden = self.llm.base_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions
        ).last_hidden_state  # [B, S, D]
        return hidden[:, text_start:]

    def loss(self, features, input_ids, attention_mask, labels, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy over answer tokens (labels != -100), their mean or ("sum") their sum; logits only where
        they count. Training sums and divides by the answer tokens of the whole step (every micro-batch of every
        process, `answer_tokens`), so the loss does not depend on how a step is cut."""
        hidden = self._text_hidden(features, input_ids, attention_mask)
        # Position i predicts token i + 1.
        targets = labels[:, 1:]  # [B, L-1]
        keep = targets != -100
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][keep])  # [K, V]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # at least float32 (float64 stays)
        return nn.functional.cross_entropy(logits, targets[keep], reduction=reduction)

    @staticmethod
    def answer_tokens(labels: torch.Tensor) -> int:
        """How many tokens `loss` averages over for these labels."""
        return int((labels[:, 1:] != -100).sum())

    @torch.no_grad()
    def continuation_logprobs(self, features, input_ids, attention_mask, labels) -> tuple[list[float], list[bool]]:
        """Per row: the summed log-probability of the labelled tokens and whether greedy decoding would have
        produced exactly them (lmms-eval's `loglikelihood`)."""
        hidden = self._text_hidden(features, input_ids, attention_mask)
        logits = self.llm.get_output_embeddings()(hidden[:, :-1]).float().log_softmax(-1)  # [B, L-1, V]
        targets = labels[:, 1:]
        keep = targets != -100
        picked = logits.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # [B, L-1]
        greedy = (logits.argmax(-1) == targets) | ~keep
        return (picked * keep).sum(-1).tolist(), greedy.all(-1).tolist()

    @torch.inference_mode()
    def generate(
        self,
        features: torch.Tensor | PatchBatch,
        prompts: list[list[int]],
        max_new_tokens: int,
        pages: list[int] | None = None,
    ) -> list[list[int]]:
        """Greedy decoding for a batch, with the KV cache; `prompts[i]` asks about page `pages[i]` of
        `features` ([P, N, d] or a PatchBatch; default: page i). Returns each answer's token ids, cut at EOS.

        1. Each page's [prefix | visual tokens] go through the connector and the LLM once, however many
           questions ask about it (prefix sharing). When every page has the same number of visual tokens
           this prefill needs no padding and no mask beyond the causal one; pages with fewer (tiled pages
           with fewer tiles, a PatchBatch) are padded after their own tokens, the pads masked, positions
           counted without them.
        2. The page caches are gathered per question, then the prompts are prefilled after them,
           left-padded: [page | pads | prompt], pads masked, positions counted without the pads.
        3. One token per step for the whole batch until every answer has ended (EOS) or the budget is spent.
        The result is what `generate_reference` (one Hugging Face `generate` call) returns, sample by sample:
        tests/unit/test_model.py checks it for every connector, one sample at a time and in batches, and
        tests/integration/test_tiling.py for pages with different tile grids."""
        tok = self.tokenizer
        device = features.values.device if isinstance(features, PatchBatch) else features.device
        n = len(prompts)
        pages = list(range(n)) if pages is None else list(pages)
        if n == 0:
            return []
        if not _plain_greedy(self.llm):  # the LLM's generation config changes the logits: let transformers do it
            return self.generate_reference(features[pages], prompts, max_new_tokens)
        # 1. the page ([prefix] + visual tokens), once per page asked about
        used = sorted(set(pages))
        if used != list(range(len(features))):
            features = features[used]
            index = {page: i for i, page in enumerate(used)}
            pages = [index[page] for page in pages]
        visual, page_mask = self.visual_tokens_masked(features)  # [P, T, D], [P, T] (left-padded when uneven)
        embed = self.llm.get_input_embeddings()
        page_embeds = visual.to(embed.weight.dtype)
        if self.prefix_ids:
            prefix = torch.tensor(self.prefix_ids, device=device).expand(page_embeds.shape[0], -1)
            page_embeds = torch.cat([embed(prefix), page_embeds], dim=1)  # [P, P_prefix + T, D]
            page_mask = torch.cat([torch.ones_like(prefix), page_mask], dim=1)
        if bool(page_mask.all()):
            out = _llm_forward(self.llm.base_model, inputs_embeds=page_embeds, use_cache=True)
        else:
            # Real tokens first, pads after them: no row starts with a query that may attend to nothing.
            order = torch.argsort(1 - page_mask, dim=1, stable=True)
            page_embeds = torch.gather(page_embeds, 1, order.unsqueeze(-1).expand_as(page_embeds))
            page_mask = torch.gather(page_mask, 1, order)
            out = _llm_forward(
                self.llm.base_model,
                inputs_embeds=page_embeds,
                attention_mask=page_mask,
                position_ids=(page_mask.cumsum(-1) - 1).clamp_min(0),
                use_cache=True,
            )
        cache = _cache_of(out)
        if pages != list(range(page_embeds.shape[0])):
            cache.batch_select_indices(torch.tensor(pages, device=device))
        page_mask = page_mask[pages]  # [n, S]
        # 2. the prompts after their page, left-padded; positions continue from the page's real tokens
        ids, text_mask = left_pad(prompts, tok.pad_token_id, device)
        mask = torch.cat([page_mask, text_mask], dim=1)
        positions = page_mask.sum(-1, keepdim=True) + (text_mask.cumsum(-1) - 1).clamp_min(0)  # pads: as the 1st token
        lm_head = self.llm.get_output_embeddings()
        hidden = _llm_forward(
            self.llm.base_model,
            inputs_embeds=embed(ids),
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        ).last_hidden_state
        # 3. greedy decoding; answers that ended leave the batch (rows are independent)
        stop = self.stop_ids
        answers: list[list[int]] = [[] for _ in range(n)]
        active = list(range(n))  # the rows still in the batch, by sample
        position = positions[:, -1:]  # [B, 1]
        for step in range(max_new_tokens):
            tokens = lm_head(hidden[:, -1]).argmax(-1)  # [B]
            keep = []
            for row, (b, t) in enumerate(zip(active, tokens.tolist())):
                answers[b].append(t)
                if t not in stop:
                    keep.append(row)
            if not keep or step + 1 == max_new_tokens:
                break
            if len(keep) < len(active):
                rows = torch.tensor(keep, device=device)
                cache.batch_select_indices(rows)
                tokens, mask, position = tokens[rows], mask[rows], position[rows]
                active = [active[row] for row in keep]
            position = position + 1
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            hidden = _llm_forward(
                self.llm.base_model,
                inputs_embeds=embed(tokens[:, None]),
                attention_mask=mask,
                position_ids=position,
                cache=cache,
                use_cache=True,
            ).last_hidden_state
        return [[t for t in row if t not in stop and t != tok.pad_token_id] for row in answers]

    @torch.no_grad()
    def generate_reference(self, features, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding through one Hugging Face `generate` call (the way most lmms-eval models run, one
        sample per call): prompts left-padded, pads (text or visual) in front of everything else. The
        reference `generate` is checked against, and the one-at-a-time baseline of
        benchmarks/eval_throughput.py."""
        tok = self.tokenizer
        stop = self.stop_ids
        device = features.values.device if isinstance(features, PatchBatch) else features.device
        ids, text_mask = left_pad(prompts, tok.pad_token_id, device)
        embeds, mask, _ = self.merge(features, ids, text_mask)
        # Left padding: pad positions (text or visual) move in front of everything else.
        order = torch.argsort(mask, dim=1, stable=True)  # zeros (pads) first, original order kept
        embeds = torch.gather(embeds, 1, order.unsqueeze(-1).expand_as(embeds))
        mask = torch.gather(mask, 1, order)
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=sorted(stop),
        )
        result = []
        for row in out.tolist():
            ends = [k for k, t in enumerate(row) if t in stop]
            row = row[: ends[0]] if ends else row
            result.append([t for t in row if t != tok.pad_token_id])
        return result


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, L] of prompts left-padded to the longest (L), and their mask (1 on prompt tokens)."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), length), dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, length - len(p) :] = torch.tensor(p, device=device)
        mask[b, length - len(p) :] = 1
    return ids, mask


def _llm_forward(model, cache=None, **kwargs):
    """A transformers base model's forward with a KV cache, under the name its signature gives the cache
    argument (`cache` in recent transformers, `past_key_values` before)."""
    if cache is not None:
        kwargs[_cache_argument(type(model))] = cache
    return model(**kwargs)


@functools.cache
def _cache_argument(cls) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


# Settings of a generation config that change greedy decoding, with the values that leave it alone.
_NEUTRAL = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "sequence_bias": (None,),
    "encoder_repetition_penalty": (None, 1.0),
}


def _plain_greedy(llm) -> bool:
    """Whether greedy decoding of this LLM is argmax of its logits (no processor from its generation config)."""
    config = getattr(llm, "generation_config", None)
    return config is None or all(getattr(config, k, None) in ok for k, ok in _NEUTRAL.items())


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
