"""Two modality towers in the MBT style (``share_encoder=False``): per-modality CLS, separate block stacks,
one shared final LayerNorm and one shared linear head applied to each CLS (the owner initialises it). Used by late, mid and MBT, so that
their weights line up one to one (MBT with Lf = L loads a late-fusion state dict unchanged)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusionbench.nn.block import make_blocks
from fusionbench.nn.model import FusionModel, FusionOutput, mean_stream_loss

MODALITIES = ("audio", "video")


class TwoTowers(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float, num_classes: int) -> None:
        super().__init__()
        # MBT: `cls` / `clsspectrogram`, zero-initialised (their positional embedding is folded into the parameter).
        self.cls = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, dim)) for m in MODALITIES})
        self.blocks = nn.ModuleDict({m: make_blocks(depth, dim, heads, mlp_ratio, drop_path) for m in MODALITIES})
        self.norm = nn.LayerNorm(dim)  # MBT `encoder_norm`, shared by both modalities
        self.head = nn.Linear(dim, num_classes)  # MBT `output_projection`, shared; initialised by FusionModel.init_head

    def with_cls(self, modality: str, tokens: Tensor) -> Tensor:
        cls = self.cls[modality].expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        return torch.cat([cls, tokens], dim=1)  # (B, 1 + N_m, D)

    def readout(self, modality: str, tokens: Tensor) -> Tensor:
        """Shared LN + shared head on the modality's CLS token → (B, C)."""
        return self.head(self.norm(tokens[:, 0]))


def present(audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
    """The given modalities as a dict in a fixed order (audio first)."""
    return {m: x for m, x in zip(MODALITIES, (audio, video)) if x is not None}


def mean_logits(streams: dict[str, Tensor]) -> Tensor:
    return torch.stack(list(streams.values())).mean(0)  # (B, C)


def resolve_fusion_layer(fusion_layer: int | None, depth: int) -> int:
    """``Lf``: the first layer (0-indexed) where the towers exchange information; ``Lf = depth`` is late fusion.

    ``None`` gives ``2·depth // 3``, MBT's 8 of 12 scaled to the depth (fusionbench's default rule: 4 → 2, 2 → 1).
    """
    lf = 2 * depth // 3 if fusion_layer is None else int(fusion_layer)
    if not 0 <= lf <= depth:
        raise ValueError(f"fusion_layer={fusion_layer} must be in [0, depth={depth}]")
    return lf


class TowerFusion(FusionModel):
    """Late, mid and MBT: ``TwoTowers`` whose final CLS tokens the shared head reads; the prediction is the mean of the
    per-modality logits and the training loss the mean of the per-modality losses (MBT's rule). A subclass defines
    only its routing, ``encode``."""

    def __init__(self, num_classes: int, **geometry) -> None:
        super().__init__(num_classes, **geometry)
        self.towers = TwoTowers(self.dim, self.depth, self.heads, self.mlp_ratio, self.drop_path, num_classes)
        self.init_head(self.towers.head)

    def encode(self, tokens: dict[str, Tensor]) -> dict[str, Tensor]:
        """Embedded tokens {m: (B, N_m, D)} (any subset of each grid: MAE passes the visible ones) → the final
        tokens {m: (B, 1 + N_m, D)}, CLS first, before the norm: the fusion's routing."""
        raise NotImplementedError

    def forward(self, audio: Tensor | None = None, video: Tensor | None = None) -> FusionOutput:
        tokens = self.encode(present(*self.tokenizer(audio, video)))  # {m: (B, 1 + N_m, D)}
        streams = {m: self.towers.readout(m, x) for m, x in tokens.items()}  # {m: (B, C)}
        return FusionOutput(logits=mean_logits(streams), streams=streams)

    def embed(self, audio: Tensor | None = None, video: Tensor | None = None) -> dict[str, Tensor]:
        """{m: (B, D)}: each tower's CLS after the shared norm (what the shared head reads), for pretraining."""
        return {m: self.towers.norm(x[:, 0]) for m, x in self.encode(present(*self.tokenizer(audio, video))).items()}

    loss = staticmethod(mean_stream_loss)
