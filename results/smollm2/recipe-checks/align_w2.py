"""ALIGN with its own learning-rate multiplier for W2 (the D -> V layer initialised from the LM head)."""

from dataclasses import dataclass

from alignbench.connectors.align import AlignConnector

from alignbench.connector import CONNECTORS


@CONNECTORS.register("align_w2")
class AlignW2(AlignConnector):
    @dataclass
    class Config(AlignConnector.Config):
        w2_lr_mult: float = 0.0

    def param_groups(self, lr):
        w2 = [self.w2.weight, self.w2.bias]
        groups = super().param_groups(lr)
        rest = [p for p in groups[0]["params"] if all(p is not q for q in w2)]
        out = [{"params": rest, "lr": lr}, groups[1]]
        if self.config.w2_lr_mult > 0:
            out.append({"params": w2, "lr": lr * self.config.w2_lr_mult})
        else:
            for p in w2:
                p.requires_grad_(False)
        return out
