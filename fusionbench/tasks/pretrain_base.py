"""What the pretraining objectives share: a LightningModule over clips with both modalities, labels ignored, and the
supervised task's optimiser (AdamW, decay on Linear/Conv weights only, warm-up + cosine, ``train.lr`` or the blr rule).

A subclass defines ``objective(audio, video) -> {"loss": ..., other scalars}``. Clips missing a modality cannot
give a pair (contrastive) or both reconstructions (MAE): they are left out of the batch and counted
(``train/skipped_clips``, ``val/skipped_clips``), never filled with zeros.
"""
from __future__ import annotations

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor

from fusionbench.nn.model import FusionModel
from fusionbench.tasks.classify import adamw_warmup_cosine, effective_batch, peak_lr


def both_present(batch: dict) -> tuple[Tensor, Tensor, int]:
    """(audio, video) of the clips that have both modalities, and how many clips were left out."""
    audio, video = batch["audio"], batch["video"]  # (B, 1, F, T), (B, 3, T, H, W)
    keep = torch.ones(len(audio), dtype=torch.bool, device=audio.device)
    for key in ("audio_present", "video_present"):
        if batch.get(key) is not None:
            keep &= batch[key].to(audio.device).bool()
    return audio[keep], video[keep], int((~keep).sum())


class PretrainTask(L.LightningModule):
    """Base class: ``self.model`` is the encoder whose state dict the pretraining run saves."""

    def __init__(self, model: FusionModel, train_cfg: DictConfig, batch_size: int) -> None:
        super().__init__()
        self.model = model
        self.train_cfg = train_cfg
        self.effective_batch = effective_batch(train_cfg, batch_size)
        self.lr = peak_lr(train_cfg, batch_size)

    def objective(self, audio: Tensor, video: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _step(self, batch: dict, stage: str) -> Tensor | None:
        audio, video, skipped = both_present(batch)
        self.log(f"{stage}/skipped_clips", float(skipped), on_step=False, on_epoch=True, reduce_fx="sum")
        if len(audio) < 2:  # nothing to pair or reconstruct in this batch (Lightning skips a None step)
            return None
        terms = self.objective(audio, video)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, batch_size=len(audio))
        return terms["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.train_cfg, self.lr, int(self.trainer.estimated_stepping_batches))
