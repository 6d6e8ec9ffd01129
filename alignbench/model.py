"""One module composes vision tower, connector and LLM, with one merge path:

    [visual tokens from the connector] + [text embeddings of prompt (+ answer)]  ->  LLM

Training loss is next-token cross-entropy on answer tokens only, and LM-head logits are computed
only at those positions. Generation is greedy from `inputs_embeds` with the KV cache, batched with
left padding.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Backbone, vision_features
from .connector import Connector


class VLM(nn.Module):
    def __init__(self, backbone: Backbone, connector: Connector):
        super().__init__()
        self.vision = backbone.vision
        self.llm = backbone.llm
        self.connector = connector
        self.tokenizer = backbone.tokenizer

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return vision_features(self.vision, pixel_values)  # [B, N, d]

    def visual_tokens(self, features: torch.Tensor) -> torch.Tensor:
        tokens = self.connector(features.to(self.connector_dtype))  # [B, T, D]
        expected = self.connector.num_tokens(features.shape[1])
        assert tokens.shape[1] == expected, (
            f"connector {self.connector.name!r} emitted {tokens.shape[1]} tokens, declared {expected}")
        return tokens

    @property
    def connector_dtype(self) -> torch.dtype:
        return next(self.connector.parameters()).dtype

    def merge(self, features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The one merge path: visual tokens prepended to the text embeddings."""
        visual = self.visual_tokens(features)  # [B, T, D]
        text = self.llm.get_input_embeddings()(input_ids)  # [B, L, D]
        embeds = torch.cat([visual.to(text.dtype), text], dim=1)  # [B, T + L, D]
        mask = torch.cat([attention_mask.new_ones(visual.shape[:2]), attention_mask], dim=1)  # [B, T + L]
        return embeds, mask, visual.shape[1]

    def loss(self, features, input_ids, attention_mask, labels) -> torch.Tensor:
        """Mean cross-entropy over answer tokens (labels != -100); logits only where they count."""
        embeds, mask, n_visual = self.merge(features, input_ids, attention_mask)
        hidden = self.llm.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # [B, T+L, D]
        hidden = hidden[:, n_visual:]  # text positions only
        # Position i predicts token i + 1.
        targets = labels[:, 1:]  # [B, L-1]
        keep = targets != -100
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][keep])  # [K, V]
        return nn.functional.cross_entropy(logits.float(), targets[keep])

    @torch.no_grad()
    def generate(self, features: torch.Tensor, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding for a batch; prompts are left-padded so every sequence ends at the same place."""
        tok = self.tokenizer
        device = features.device
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), tok.pad_token_id, dtype=torch.long, device=device)
        text_mask = torch.zeros((len(prompts), length), dtype=torch.long, device=device)
        for b, p in enumerate(prompts):
            ids[b, length - len(p):] = torch.tensor(p, device=device)
            text_mask[b, length - len(p):] = 1
        visual = self.visual_tokens(features)  # [B, T, D]
        text = self.llm.get_input_embeddings()(ids)  # [B, L, D]
        # Left padding: pad positions move in front of the visual tokens.
        embeds = torch.cat([visual.to(text.dtype), text], dim=1)
        mask = torch.cat([text_mask.new_ones(visual.shape[:2]), text_mask], dim=1)
        order = torch.argsort(mask, dim=1, stable=True)  # zeros (pads) first, original order kept
        embeds = torch.gather(embeds, 1, order.unsqueeze(-1).expand_as(embeds))
        mask = torch.gather(mask, 1, order)
        out = self.llm.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            num_beams=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        result = []
        for row in out.tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            result.append([t for t in row if t != tok.pad_token_id])
        return result
