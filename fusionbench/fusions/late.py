"""Late fusion, as MBT defines it (MBT with Lf = L).

| late | per-modality CLS | two towers, never attend across; shared head on each CLS; mean logits |

Two towers with separate weights; each modality's CLS goes through one shared LayerNorm and one shared linear head;
the prediction is the mean of the per-modality (pre-softmax) logits; training minimises the mean of the per-modality
losses (MBT ``loss_function``).

Unimodal policy: exact. With one modality absent, its tower is not run and the prediction is the present tower's
logits, which are bit-identical to that tower's stream in the two-modality forward.
"""
from __future__ import annotations

from torch import Tensor

from fusionbench.nn.towers import TowerFusion
from fusionbench.registry import register_fusion


@register_fusion("late")
class LateFusion(TowerFusion):
    def encode(self, tokens: dict[str, Tensor]) -> dict[str, Tensor]:
        """``TowerFusion.encode``: this fusion's routing."""
        tokens = {m: self.towers.with_cls(m, x) for m, x in tokens.items()}  # {m: (B, 1 + N_m, D)}
        for layer in range(self.depth):
            tokens = {m: self.towers.blocks[m][layer](x) for m, x in tokens.items()}  # never across modalities
        return tokens
