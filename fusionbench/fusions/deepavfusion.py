"""DeepAVFusion (Mo & Morgado, CVPR 2024): towers that read shared fusion tokens, fusion tokens updated by an
interaction block.

| deepavfusion | fusion + aggregation tokens | towers attend over [F ‖ own]; F updated by token / dense / factorized block |

Paper rule (code, methods.md §3.2): two towers with separate weights and no CLS; a fusion state f of
ΣF = F + M_v + M_a learned tokens (default (16, 8, 8): 16 fusion, 8 video- and 8 audio-aggregation tokens), drawn from
N(0, 0.02), no positional embedding. At each fusion layer l:
    x_v ← Block_v(x_v, context=[f ‖ x_v])       (the block's outputs at the fusion positions are discarded)
    x_a ← Block_a(x_a, context=[f ‖ x_a])
    f   ← FusionBlock(f, x_v, x_a)               (``fusion_block``: token | dense | factorized; nn/fusion_blocks.py)
At the end: per-modality LayerNorms and a separate fusion LayerNorm; three linear heads on the mean-pooled video,
audio and fusion tokens; prediction = mean of the three logits. ``joint_loss=True`` (the code's default) puts the
criterion on the averaged logits; ``False`` averages the three per-head losses.

The public code's quirks are reproduced by default, each a switch:
- ``residual_on_normed``: the fusion block's residual is added to the normalised fusion tokens LN_f(f).
- ``quirk_attn_scale``: the pair attentions (dense, factorized) scale by (D/heads)^-0.5, not (D'/heads)^-0.5.
- ``parallel_update``: the fusion block reads the previous layer's modality tokens (False: the updated ones).
``fusion_layers``: 'all' | 'none' | a list of layer indices (or the code's '0-4-8'). At a non-fusion layer the towers
run alone and f is unchanged; with 'none' the fusion head reads the initial f (a constant), as in the code.
``attn_ratio=0.25`` and ``fusion_mlp_ratio=1.0`` are the code's VGGSound settings (AS-2M: 1.0 and 4.0).

fusionbench's choices: the attention at a tower's layer uses queries from the tower's own tokens only (the same output
as the code's block over [f ‖ x_m] for the kept tokens); heads follow ``head_init`` (the code's are Xavier-uniform,
``head_init=xavier``, with the class-prior log-odds as bias, unknown at construction; ours is zero).

Unimodal policy (the method defines none, methods.md §3.5): the absent tower is not run and its head is absent;
the fusion block gets ``None`` for the absent modality, and each interaction term that needs it is omitted (no
update): token reads the present tokens; dense has no term (the block is residual + MLP, so f never reads the
input and the fusion head is input-independent); factorized runs the present modality's aggregation only.
Prediction = mean of the present modality's logits and the fusion logits.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from fusionbench.nn.block import drop_path_rates, make_blocks
from fusionbench.nn.fusion_blocks import FusionBlock
from fusionbench.nn.model import FusionModel, FusionOutput, mean_stream_loss
from fusionbench.nn.towers import MODALITIES, mean_logits, present
from fusionbench.registry import register_fusion


def parse_fusion_layers(spec: str | int | Sequence[int], depth: int) -> list[int]:
    """'all' | 'none' | int | '0-4-8' | [0, 4, 8] → sorted layer indices in [0, depth)."""
    if spec == "all":
        return list(range(depth))
    if spec == "none":
        return []
    items = [spec] if isinstance(spec, int) else spec.split("-") if isinstance(spec, str) else spec
    layers = sorted({int(layer) for layer in items})
    if any(not 0 <= layer < depth for layer in layers):
        raise ValueError(f"fusion_layers={spec!r}: every layer must be in [0, depth={depth})")
    return layers


@register_fusion("deepavfusion")
class DeepAVFusion(FusionModel):
    def __init__(
        self,
        num_classes: int,
        *,
        fusion_block: str = "factorized",
        fusion_tokens: tuple[int, int, int] = (16, 8, 8),
        fusion_layers: str | int | Sequence[int] = "all",
        attn_ratio: float = 0.25,
        fusion_mlp_ratio: float = 1.0,
        joint_loss: bool = True,
        residual_on_normed: bool = True,
        quirk_attn_scale: bool = True,
        parallel_update: bool = True,
        **geometry,
    ) -> None:
        super().__init__(num_classes, **geometry)
        self.fusion_layers = parse_fusion_layers(fusion_layers, self.depth)
        if len(fusion_tokens) != 3:
            raise ValueError(f"fusion_tokens={fusion_tokens!r} must be (F, M_v, M_a)")
        self.joint_loss, self.parallel_update = joint_loss, parallel_update
        self.fusion_tokens = nn.Parameter(torch.empty(1, sum(fusion_tokens), self.dim).normal_(std=0.02))  # (1, ΣF, D)
        towers = {m: make_blocks(self.depth, self.dim, self.heads, self.mlp_ratio, self.drop_path) for m in MODALITIES}
        self.blocks = nn.ModuleDict(towers)  # separate weights per modality
        rates = drop_path_rates(self.depth, self.drop_path)
        self.fusion = nn.ModuleDict({
            str(layer): FusionBlock(
                fusion_block, self.dim, self.heads, tuple(fusion_tokens), attn_ratio, fusion_mlp_ratio, rates[layer],
                residual_on_normed, quirk_attn_scale,
            )
            for layer in self.fusion_layers
        })
        self.norms = nn.ModuleDict({s: nn.LayerNorm(self.dim) for s in (*MODALITIES, "fusion")})
        self.heads_out = nn.ModuleDict({s: nn.Linear(self.dim, num_classes) for s in (*MODALITIES, "fusion")})
        for head in self.heads_out.values():
            self.init_head(head)

    def forward(self, audio: Tensor | None = None, video: Tensor | None = None) -> FusionOutput:
        streams = {s: self.heads_out[s](z) for s, z in self.embed(audio, video).items()}  # {s: (B, C)}
        return FusionOutput(logits=mean_logits(streams), streams=streams)

    def embed(self, audio: Tensor | None = None, video: Tensor | None = None) -> dict[str, Tensor]:
        """{audio, video, fusion: (B, D)}: the mean-pooled normalised tokens the heads read."""
        tokens, f = self.encode(present(*self.tokenizer(audio, video)))
        pooled = {m: self.norms[m](x).mean(1) for m, x in tokens.items()}  # {m: (B, D)}
        pooled["fusion"] = self.norms["fusion"](f).mean(1)  # (B, D): all ΣF tokens
        return pooled

    def encode(self, tokens: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """Embedded tokens {m: (B, N_m, D)} (any subset of each grid: MAE passes the visible ones) → the final
        tokens {m: (B, N_m, D)} and fusion state f (B, ΣF, D), before the final norms."""
        # repeat, not expand: under no_grad an expanded view of a parameter is a grad-less leaf that requires grad,
        # which FlopCounterMode's module tracker rejects when it reaches a module's input
        f = self.fusion_tokens.repeat(next(iter(tokens.values())).shape[0], 1, 1)  # (B, ΣF, D)
        for layer in range(self.depth):
            if str(layer) not in self.fusion:
                tokens = {m: self.blocks[m][layer](x) for m, x in tokens.items()}  # route: own tokens only
                continue
            # route: each tower's tokens attend over [F ‖ own]
            new = {m: self.blocks[m][layer](x, context=torch.cat([f, x], dim=1)) for m, x in tokens.items()}
            read = tokens if self.parallel_update else new
            f = self.fusion[str(layer)](f, read.get("video"), read.get("audio"))  # route: F reads A, V
            tokens = new
        return tokens, f

    def loss(self, out: FusionOutput, target: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """``joint_loss``: the criterion on the averaged logits; otherwise the mean of the per-head losses."""
        return criterion(out.logits, target) if self.joint_loss else mean_stream_loss(out, target, criterion)
