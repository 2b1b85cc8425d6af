"""Mid fusion: two towers, unimodal below ``Lf``, full cross-modal attention from ``Lf``.

| mid | — | unimodal below Lf, full cross-modal attention from Lf |

Paper rule (MBT ``use_bottleneck=False, share_encoder=False``, "vanilla cross-attention"): each modality keeps its own
weights; for layers l < Lf the towers run alone; for l >= Lf each tower's tokens attend over the tokens of both
modalities [A ‖ V] with that tower's weights. The readout is late fusion's: per-modality CLS, one shared LayerNorm and
one shared head on each CLS, mean logits, mean of the per-stream losses.

fusionbench's choices:
- Efficient form: queries come from the tower's own tokens only, keys/values from [A ‖ V] (``Block(x, context=...)``).
  The scenic code runs the full block (MLP included) over the concatenation and keeps the tower's slice: the same
  output for the kept tokens, at more cost (methods.md §1.7).
- ``fusion_layer=None`` gives ``2·depth // 3`` (MBT's 8 of 12 scaled to the depth).

Unimodal policy: absent tokens are dropped; the present tower then runs alone at every layer (its context is its own
tokens), which is exactly that tower's unimodal forward.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fusionbench.nn.towers import TowerFusion, resolve_fusion_layer
from fusionbench.registry import register_fusion


@register_fusion("mid")
class MidFusion(TowerFusion):
    def __init__(self, num_classes: int, *, fusion_layer: int | None = None, **geometry) -> None:
        super().__init__(num_classes, **geometry)
        self.fusion_layer = resolve_fusion_layer(fusion_layer, self.depth)

    def encode(self, tokens: dict[str, Tensor]) -> dict[str, Tensor]:
        """``TowerFusion.encode``: this fusion's routing."""
        tokens = {m: self.towers.with_cls(m, x) for m, x in tokens.items()}  # {m: (B, 1 + N_m, D)}
        for layer in range(self.depth):
            if layer < self.fusion_layer or len(tokens) == 1:
                tokens = {m: self.towers.blocks[m][layer](x) for m, x in tokens.items()}  # route: own tokens only
            else:
                both = torch.cat(list(tokens.values()), dim=1)  # (B, 2 + N_a + N_v, D): [A ‖ V]
                tokens = {m: self.towers.blocks[m][layer](x, context=both) for m, x in tokens.items()}  # route: A ‖ V
        return tokens
