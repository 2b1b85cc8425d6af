"""Early fusion: one shared backbone, full self-attention over [CLS ‖ A ‖ V] from layer 0.

| early | — | one sequence [A ‖ V], full self-attention from layer 0 |

Paper rule (MBT ``use_bottleneck=False, share_encoder=True``, "vanilla self-attention"): the modality tokens are
concatenated and one transformer (one set of weights) runs over the joint sequence, so every token attends to every
token of both modalities at every layer. The modality tokenizers and their positional embeddings stay separate.

fusionbench's choices:
- Readout: one learned joint CLS token (zero-initialised, as MBT's CLS) at the front of the joint sequence, one
  LayerNorm and one linear head on it (``head_init``). ``logits`` is that head's output and ``streams`` holds it once,
  as ``global`` (the CLS reads every token). Training loss: the criterion on those logits (the base-class rule).
- Parameters: one block stack, so about half the transformer parameters of the two-tower fusions (by design).

Unimodal policy: absent tokens are dropped; the same backbone runs over [CLS ‖ A] or [CLS ‖ V].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusionbench.nn.block import make_blocks
from fusionbench.nn.model import FusionModel, FusionOutput
from fusionbench.registry import register_fusion


@register_fusion("early")
class EarlyFusion(FusionModel):
    def __init__(self, num_classes: int, **geometry) -> None:
        super().__init__(num_classes, **geometry)
        self.cls = nn.Parameter(torch.zeros(1, 1, self.dim))
        self.blocks = make_blocks(self.depth, self.dim, self.heads, self.mlp_ratio, self.drop_path)  # one backbone
        self.norm = nn.LayerNorm(self.dim)
        self.head = nn.Linear(self.dim, num_classes)
        self.init_head(self.head)

    def forward(self, audio: Tensor | None = None, video: Tensor | None = None) -> FusionOutput:
        logits = self.head(self.norm(self._joint(audio, video)[:, 0]))  # (B, C)
        return FusionOutput(logits=logits, streams={"global": logits})

    def embed(self, audio: Tensor | None = None, video: Tensor | None = None) -> dict[str, Tensor]:
        """{global: the normed CLS (B, D); audio / video: the mean of that modality's normed last-layer tokens}.

        Early fusion has no modality-pure readout (fusionbench's choice for pretraining): the per-modality means mix
        both modalities after layer 0, which is Zorro's "contrastive without masks" setting."""
        x = self.norm(self._joint(audio, video))  # (B, 1 + N_a + N_v, D)
        n_a = self.num_audio_tokens if audio is not None else 0
        out = {"global": x[:, 0]}
        if audio is not None:
            out["audio"] = x[:, 1 : 1 + n_a].mean(1)  # (B, D)
        if video is not None:
            out["video"] = x[:, 1 + n_a :].mean(1)  # (B, D)
        return out

    def _joint(self, audio: Tensor | None, video: Tensor | None) -> Tensor:
        """The final joint sequence [CLS ‖ A ‖ V] (B, 1 + N_a + N_v, D), before the norm."""
        a, v = self.tokenizer(audio, video)  # (B, N_a, D), (B, N_v, D); an absent modality is None
        present = [x for x in (a, v) if x is not None]
        x = torch.cat([self.cls.expand(present[0].shape[0], -1, -1), *present], dim=1)  # (B, 1 + N_a + N_v, D)
        for block in self.blocks:
            x = block(x)  # route: every token attends to every token, both modalities
        return x
