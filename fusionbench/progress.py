"""One readable line per epoch (stdout, flushed), so progress shows in logs, `make` output and sweeps alike."""
from __future__ import annotations

import logging
import sys
import time

import lightning as L


class EpochLine(L.Callback):
    def __init__(self, label: str) -> None:
        self.label = label
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics  # this epoch's train and validation metrics (validation ran first)
        shown = "  ".join(f"{k} {float(v):.3f}" for k, v in sorted(metrics.items()) if k.startswith(("train/", "val/")))
        print(
            f"  [{self.label}] epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  "
            f"({time.perf_counter() - self.start:.1f} s)",
            flush=True,
            file=sys.stdout,
        )


class MLflowEpochMetrics(L.Callback):
    """Logs ``train/*`` and ``val/*`` epoch metrics to the run's MLflow record (step = epoch)."""

    def __init__(self, tracked) -> None:
        self.tracked = tracked

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        self.tracked.log_metrics(metrics, step=trainer.current_epoch)


def quiet_lightning() -> None:
    """Silence Lightning's start-up banners (GPU/TPU availability, tips); warnings still show."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
