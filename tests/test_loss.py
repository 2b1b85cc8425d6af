"""Training-loss rules, against hand computations: multi-label label smoothing (scenic's rule) and MBT / late / mid
training on the mean of the per-modality losses, not on the loss of the mean logits."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fusionbench.config import TrainConfig
from fusionbench.nn.model import FusionOutput
from fusionbench.registry import create_model
from fusionbench.tasks.classify import ClassifyTask


def task(multilabel: bool, label_smoothing: float, num_classes: int = 3) -> ClassifyTask:
    cfg = OmegaConf.structured(TrainConfig)
    cfg.label_smoothing = label_smoothing
    return ClassifyTask(create_model("late", num_classes, "tiny"), num_classes, multilabel, cfg, batch_size=2)


def bce(z: float, t: float) -> float:
    """−[t log σ(z) + (1 − t) log(1 − σ(z))], written out."""
    s = 1 / (1 + math.exp(-z))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def test_multilabel_smoothing_matches_a_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 1.2, -2.0]])
    target = torch.tensor([[1, 0, 1], [0, 0, 1]])
    eps, k = 0.3, 3
    # scenic (MBT's multi-label loss): on 1 − ε + ε/K = 0.8, off ε/K = 0.1; mean over samples and classes
    on, off = 1 - eps + eps / k, eps / k
    expected = sum(
        bce(float(z), on if y else off) for zs, ys in zip(logits, target) for z, y in zip(zs, ys)
    ) / target.numel()
    assert float(task(True, eps).criterion(logits, target)) == pytest.approx(expected, rel=1e-6)
    unsmoothed = sum(bce(float(z), float(y)) for zs, ys in zip(logits, target) for z, y in zip(zs, ys)) / 6
    assert float(task(True, 0.0).criterion(logits, target)) == pytest.approx(unsmoothed, rel=1e-6)
    assert abs(expected - unsmoothed) > 0.01  # the fixture tells the two apart (0.018)


def test_multiclass_smoothing_is_torch_cross_entropy_s():
    logits, target = torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([0])
    logp = torch.log_softmax(logits, 1)[0]
    eps = 0.1
    expected = -((1 - eps) * logp[0] + eps / 3 * logp.sum())  # Szegedy: (1 − ε)·one-hot + ε/K
    assert float(task(False, eps).criterion(logits, target)) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("fusion", ["late", "mbt", "mid"])
def test_two_tower_fusions_train_on_the_mean_of_the_per_modality_losses(fusion):
    model = create_model(fusion, 2, "tiny")
    streams = {"audio": torch.tensor([[5.0, 0.0]]), "video": torch.tensor([[0.0, 5.0]])}
    out = FusionOutput(logits=(streams["audio"] + streams["video"]) / 2, streams=streams)
    target = torch.tensor([0])
    # by hand: CE([5, 0], 0) = log(1 + e^-5), CE([0, 5], 0) = log(1 + e^5); their mean ≈ 2.5067
    mean_of_losses = (math.log(1 + math.exp(-5)) + math.log(1 + math.exp(5))) / 2
    loss_of_mean = math.log(2)  # CE([2.5, 2.5], 0): what the wrong rule would give
    got = float(model.loss(out, target, F.cross_entropy))
    assert got == pytest.approx(mean_of_losses, rel=1e-6) and abs(got - loss_of_mean) > 1
