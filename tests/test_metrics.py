"""Metric parity with sklearn on fixtures: micro top-1 and macro mAP (multiclass and multilabel)."""
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, top_k_accuracy_score

from fusionbench.tasks.metrics import classification_metrics


def test_multiclass_top1_top5_map_match_sklearn():
    gen = torch.Generator().manual_seed(0)
    num_classes, n = 12, 300
    target = torch.arange(n) % num_classes  # every class present (sklearn and torchmetrics agree then)
    logits = torch.randn(n, num_classes, generator=gen) + 1.5 * torch.nn.functional.one_hot(target, num_classes)
    metrics = classification_metrics(num_classes, multilabel=False)
    # Feed in uneven batches: the collection must accumulate, not average batch means.
    for chunk in (slice(0, 7), slice(7, 150), slice(150, n)):
        metrics.update(logits[chunk], target[chunk])
    got = {k: float(v) for k, v in metrics.compute().items()}
    y, p = target.numpy(), torch.softmax(logits, 1).numpy()
    assert got["top1"] == pytest.approx(accuracy_score(y, p.argmax(1)), abs=1e-6)
    assert got["top5"] == pytest.approx(top_k_accuracy_score(y, p, k=5, labels=range(num_classes)), abs=1e-6)
    onehot = np.eye(num_classes)[y]
    # multiclass AP ranks each class's softmax probability (torchmetrics normalises logits per row first)
    assert got["mAP"] == pytest.approx(average_precision_score(onehot, p, average="macro"), abs=1e-5)
    # micro, not macro: with unbalanced classes the two differ, and we must equal the micro one
    assert "top1" in got and got["top1"] != pytest.approx(0.0)


def test_multilabel_map_matches_sklearn():
    gen = torch.Generator().manual_seed(1)
    num_classes, n = 6, 200
    target = (torch.rand(n, num_classes, generator=gen) < 0.3).long()
    target[:num_classes, :] = torch.eye(num_classes, dtype=torch.long)  # every class has a positive
    scores = torch.randn(n, num_classes, generator=gen) + 2.0 * target
    metrics = classification_metrics(num_classes, multilabel=True)
    metrics.update(scores, target)
    got = float(metrics.compute()["mAP"])
    assert got == pytest.approx(average_precision_score(target.numpy(), scores.numpy(), average="macro"), abs=1e-5)


def test_top1_is_micro_not_macro():
    # 3 samples of class 0 all right, 1 sample of class 1 wrong: micro 0.75, macro 0.5.
    logits = torch.tensor([[2.0, 0, 0], [2.0, 0, 0], [2.0, 0, 0], [2.0, 0, 0]])
    target = torch.tensor([0, 0, 0, 1])
    metrics = classification_metrics(3, multilabel=False)
    metrics.update(logits, target)
    assert float(metrics.compute()["top1"]) == pytest.approx(0.75)


def test_map_is_macro_on_an_unbalanced_fixture():
    """Class sizes 120 / 40 / 12 / 5 / 3: macro (every class weighs the same) and weighted (by support) differ."""
    from sklearn.metrics import average_precision_score

    gen = torch.Generator().manual_seed(3)
    sizes = [120, 40, 12, 5, 3]
    num_classes = len(sizes)
    target = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    # easy big classes, hard small ones: weighted mAP is well above macro
    signal = torch.tensor([3.0, 2.0, 0.5, 0.2, 0.1])[target]
    logits = torch.randn(len(target), num_classes, generator=gen) + signal[:, None] * torch.nn.functional.one_hot(
        target, num_classes
    )
    onehot = np.eye(num_classes)[target.numpy()]
    p = torch.softmax(logits, 1).numpy()
    macro = average_precision_score(onehot, p, average="macro")
    weighted = average_precision_score(onehot, p, average="weighted")
    assert weighted - macro > 0.05  # the fixture tells the two apart
    metrics = classification_metrics(num_classes, multilabel=False)
    metrics.update(logits, target)
    assert float(metrics.compute()["mAP"]) == pytest.approx(macro, abs=1e-5)

    # multi-label: prevalences 50 %, 20 %, 5 %, 2 %
    n = 400
    prevalence = torch.tensor([0.5, 0.2, 0.05, 0.02])
    labels = (torch.rand(n, 4, generator=gen) < prevalence).long()
    labels[:4] = torch.eye(4, dtype=torch.long)  # every class has a positive
    scores = torch.randn(n, 4, generator=gen) + torch.tensor([2.5, 1.5, 0.3, 0.2]) * labels
    macro = average_precision_score(labels.numpy(), scores.numpy(), average="macro")
    assert average_precision_score(labels.numpy(), scores.numpy(), average="weighted") - macro > 0.05
    metrics = classification_metrics(4, multilabel=True)
    metrics.update(scores, labels)
    assert float(metrics.compute()["mAP"]) == pytest.approx(macro, abs=1e-5)
