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

from fusionbench.nn.model import FusionModel, FusionOutput, mean_stream_loss
from fusionbench.nn.towers import TwoTowers, mean_logits, present
from fusionbench.registry import register_fusion


@register_fusion("late")
class LateFusion(FusionModel):
    def __init__(self, num_classes: int, **geometry) -> None:
        super().__init__(num_classes, **geometry)
        self.towers = TwoTowers(self.dim, self.depth, self.heads, self.mlp_ratio, self.drop_path, num_classes)
        self.init_head(self.towers.head)

    def forward(self, audio: Tensor | None = None, video: Tensor | None = None) -> FusionOutput:
        tokens = self.encode(present(*self.tokenizer(audio, video)))  # {m: (B, 1 + N_m, D)}
        streams = {m: self.towers.readout(m, x) for m, x in tokens.items()}  # {m: (B, C)}
        return FusionOutput(logits=mean_logits(streams), streams=streams)

    def embed(self, audio: Tensor | None = None, video: Tensor | None = None) -> dict[str, Tensor]:
        """{m: (B, D)}: each tower's CLS after the shared norm (what the shared head reads), for pretraining."""
        return {m: self.towers.norm(x[:, 0]) for m, x in self.encode(present(*self.tokenizer(audio, video))).items()}

    def encode(self, tokens: dict[str, Tensor]) -> dict[str, Tensor]:
        """Embedded tokens {m: (B, N_m, D)} (any subset of each grid: MAE passes the visible ones) → the final
        tokens {m: (B, 1 + N_m, D)}, CLS first, before the norm."""
        tokens = {m: self.towers.with_cls(m, x) for m, x in tokens.items()}  # {m: (B, 1 + N_m, D)}
        for layer in range(self.depth):
            tokens = {m: self.towers.blocks[m][layer](x) for m, x in tokens.items()}  # never across modalities
        return tokens

    loss = staticmethod(mean_stream_loss)
