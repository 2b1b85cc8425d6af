"""Stop a run whose loss became NaN or inf, as *diverged*: it is recorded apart, never ranked as a finished run.

fusionbench's own rule (no paper states one): the first non-finite training loss of a step (``outputs["loss"]``
as the task's ``training_step`` returned it) or validation loss (the epoch's ``val/loss`` in
``trainer.callback_metrics``) raises :class:`fusionbench.errors.TrainingDiverged`. Lightning re-raises it out of
``fit``; :func:`fusionbench.tracking.tracked_run` turns it into MLflow status FAILED with ``fb.status=diverged``.
Lightning's own ``detect_anomaly`` / ``EarlyStopping(check_finite=True)`` are not used: the first is slow and raises
a plain RuntimeError, the second stops the run quietly, so a diverged run would end FINISHED.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from fusionbench.errors import TrainingDiverged


def _value(loss: Any) -> float | None:
    if loss is None:
        return None
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


class DivergenceCheck(L.Callback):
    """Raise ``TrainingDiverged(stage, step, value)`` at the first NaN / inf train or validation loss.

    ``step`` is ``trainer.global_step``: the optimiser steps taken when the loss was seen (the step whose loss was
    non-finite, counted from 1, for a training loss).
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        value = _value(loss)
        if value is not None and not math.isfinite(value):
            raise TrainingDiverged("train", trainer.global_step, value)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = _value(trainer.callback_metrics.get("val/loss"))
        if value is not None and not math.isfinite(value):
            raise TrainingDiverged("val", trainer.global_step, value)
