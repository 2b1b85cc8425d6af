"""Linear probe (``train.protocol=linear_probe``): a frozen encoder, a BatchNorm1d(affine=False) + Linear head per
readout (DeepAVFusion ``eval_linprobe.py``, methods.md §3.5: MAE's linear-probe head).

The encoder is the fusion model: every parameter has ``requires_grad=False`` and it stays in eval mode whatever
``train()`` is called with (no dropout / stochastic depth, and nothing of it is updated, so its weights after a fit
are the ones it started with). The features are the model's ``embed`` readouts (B, D) — the representations its own
heads read; the classification heads of the fusion are not used. Each readout gets its own probe head; ``logits``
is the mean of the present readouts' logits and the training loss is the mean of their losses (fusionbench's
choice: DeepAVFusion probes its three heads the same way). A missing modality drops its readouts (the fusion's own
unimodal path decides which remain).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionbench.nn.model import FusionModel, FusionOutput, mean_stream_loss
from fusionbench.nn.towers import mean_logits


class LinearProbe(nn.Module):
    def __init__(self, encoder: FusionModel, num_classes: int) -> None:
        super().__init__()
        if not hasattr(encoder, "embed"):
            raise ValueError(f"{type(encoder).__name__} has no embed(): it cannot be linearly probed")
        self.encoder = encoder.requires_grad_(False).eval()
        self.num_classes, self.dim, self.tokenizer = num_classes, encoder.dim, encoder.tokenizer
        tok = encoder.tokenizer
        with torch.no_grad():  # the readouts of an A+V clip (shapes only)
            names = encoder.embed(torch.zeros(1, 1, *tok.audio.audio_shape), torch.zeros(1, 3, *tok.video.video_shape))
        self.probes = nn.ModuleDict({
            r: nn.Sequential(nn.BatchNorm1d(encoder.dim, affine=False), nn.Linear(encoder.dim, num_classes))
            for r in names
        })
        for probe in self.probes.values():
            nn.init.trunc_normal_(probe[1].weight, std=0.01)  # MAE's linear-probe head init
            nn.init.zeros_(probe[1].bias)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.encoder.eval()  # frozen: always in eval mode
        return self

    def forward(self, audio: Tensor | None = None, video: Tensor | None = None) -> FusionOutput:
        with torch.no_grad():
            features = self.encoder.embed(audio, video)  # {r: (B, D)}
        streams = {r: self._head(r, z) for r, z in features.items()}  # {r: (B, C)}
        return FusionOutput(logits=mean_logits(streams), streams=streams)

    def _head(self, readout: str, z: Tensor) -> Tensor:
        """BatchNorm + Linear on (B, D). A training batch (or presence group) of one clip has no batch statistics:
        it is normalised with the running ones and leaves them as they are (fusionbench's choice)."""
        bn, linear = self.probes[readout]
        if self.training and len(z) == 1:
            return linear(F.batch_norm(z, bn.running_mean, bn.running_var, training=False, eps=bn.eps))
        return linear(bn(z))

    loss = staticmethod(mean_stream_loss)

    @property
    def num_audio_tokens(self) -> int:
        return self.encoder.num_audio_tokens

    @property
    def num_video_tokens(self) -> int:
        return self.encoder.num_video_tokens


def wrap(model: FusionModel, protocol: str, num_classes: int) -> nn.Module:
    """``train.protocol``: ``finetune`` → the model itself; ``linear_probe`` → a LinearProbe around it."""
    if protocol == "finetune":
        return model
    if protocol == "linear_probe":
        return LinearProbe(model, num_classes)
    from fusionbench.config import ConfigError

    raise ConfigError(f"train.protocol={protocol!r} is not one of finetune, linear_probe", key="train.protocol")
