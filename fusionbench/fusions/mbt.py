"""MBT: attention bottlenecks (Nagrani et al., NeurIPS 2021).

| mbt | B bottlenecks | unimodal below Lf; from Lf each tower attends over [own ‖ B]; B = mean of the towers' B outputs |

Paper rule (scenic ``projects/mbt``, methods.md §1.2): two towers with separate weights. For layers l < Lf each tower
runs alone. For l >= Lf, with b the shared bottleneck tokens:
    [z_m ‖ b̂_m] = Block_m([z_m ‖ b])   for m in (audio, video)    (bottlenecks appended after the modality tokens)
    b ← mean_m(b̂_m)
so the modalities meet only through b. Readout as late fusion: per-modality CLS, one shared LayerNorm and one shared
head on each CLS (MBT zero-initialises it: ``head_init=zeros``), mean logits; training loss = mean of the per-modality losses. The bottlenecks are
one learned parameter drawn from N(0, 0.02), tiled over the batch, without positional embedding, dropped at the end.

Because the tower weights are exactly late fusion's (``TwoTowers``), ``fusion_layer = depth`` is late fusion and a
late-fusion state dict loads with only ``bottleneck`` missing.

What reaches the CLS tokens (tests/test_routing_rules.py): at layer Lf the towers read the initial, learned b (no
input in it); the first averaged, cross-modal b is read at layer Lf + 1. So with Lf >= depth - 1 no cross-modal
information reaches either CLS: each stream's logits are a function of its own modality alone. With Lf = depth - 1
they still differ from late fusion's with the same weights (the last layer attends over the learned b as well);
only Lf = depth is late fusion. On the 2-layer ``tiny`` preset the default Lf = 1 = depth - 1: no fusion.

fusionbench's choices:
- ``bottleneck_plus_one=True``: like the scenic code with a CLS ('token') classifier, ``num_bottlenecks + 1`` tokens
  are used (5 for the default B = 4); ``False`` gives exactly ``num_bottlenecks``.
- ``fusion_layer=None`` gives ``2·depth // 3`` (MBT's 8 of 12 scaled to the depth).

Unimodal policy: MBT's ``test_with_bottlenecks=False`` path: with one modality absent, the present tower runs alone
at every layer, without bottlenecks, and the prediction is its CLS logits (exactly late fusion's unimodal path).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusionbench.nn.towers import TowerFusion, resolve_fusion_layer
from fusionbench.registry import register_fusion


@register_fusion("mbt")
class MBT(TowerFusion):
    def __init__(
        self,
        num_classes: int,
        *,
        num_bottlenecks: int = 4,
        fusion_layer: int | None = None,
        bottleneck_plus_one: bool = True,
        **geometry,
    ) -> None:
        super().__init__(num_classes, **geometry)
        self.fusion_layer = resolve_fusion_layer(fusion_layer, self.depth)
        n = num_bottlenecks + int(bottleneck_plus_one)
        self.bottleneck = nn.Parameter(torch.empty(1, n, self.dim).normal_(std=0.02))  # (1, B, D)

    def encode(self, tokens: dict[str, Tensor]) -> dict[str, Tensor]:
        """``TowerFusion.encode``: this fusion's routing."""
        tokens = {m: self.towers.with_cls(m, x) for m, x in tokens.items()}  # {m: (B, 1 + N_m, D)}
        b = self.bottleneck.expand(next(iter(tokens.values())).shape[0], -1, -1)  # (B, n_b, D)
        for layer in range(self.depth):
            if layer < self.fusion_layer or len(tokens) == 1:
                tokens = {m: self.towers.blocks[m][layer](x) for m, x in tokens.items()}  # route: own tokens only
                continue
            # route: each tower runs its block on [z_m ‖ b] (bottlenecks after the modality tokens)
            outs = {m: self.towers.blocks[m][layer](torch.cat([x, b], dim=1)) for m, x in tokens.items()}
            tokens = {m: y[:, : -b.shape[1]] for m, y in outs.items()}  # (B, 1 + N_m, D)
            b = torch.stack([y[:, -b.shape[1] :] for y in outs.values()]).mean(0)  # (B, n_b, D): mean over towers
        return tokens
