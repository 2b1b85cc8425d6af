"""Classification metrics as published: micro top-1/top-5 (multiclass) and macro mAP (both paths), via torchmetrics.

torchmetrics' ``MulticlassAccuracy`` defaults to macro averaging; published top-1/top-5 are micro, so it is set here.
Compute groups are off: with them, ``MetricCollection`` merged the top-1 and top-5 accuracies' states (same state
shapes after the first update) and reported wrong top-1 values (caught by the sklearn parity test).
Multiclass AP ranks each class's softmax probability (torchmetrics turns logits into probabilities per row first);
multilabel AP ranks each class's sigmoid score. Macro mAP follows torchmetrics: a class with no positives in the split scores 0 inside the mean (as sklearn's
``average_precision_score`` does not); the parity test pins which classes are present.
"""
from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAveragePrecision,
    MultilabelAveragePrecision,
)


def classification_metrics(num_classes: int, multilabel: bool, top_k: int = 5) -> MetricCollection:
    if multilabel:
        return MetricCollection(
            {"mAP": MultilabelAveragePrecision(num_labels=num_classes, average="macro")}, compute_groups=False
        )
    metrics = {
        "top1": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro"),
        "mAP": MulticlassAveragePrecision(num_classes=num_classes, average="macro"),
    }
    if num_classes > top_k:
        metrics[f"top{top_k}"] = MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")
    return MetricCollection(metrics, compute_groups=False)


def headline_metric(multilabel: bool) -> str:
    return "mAP" if multilabel else "top1"
