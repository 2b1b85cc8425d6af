"""train.modality_dropout (tasks/modality_dropout.py): the drop rate is p, a dropped clip goes through the fusion's own
unimodal path (its tensor never read), and validation / test are untouched."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.config import ConfigError, TrainConfig, config_hash, load_config
from fusionbench.evaluate.conditions import parse_condition
from fusionbench.registry import create_model
from fusionbench.tasks.classify import ClassifyTask
from fusionbench.tasks.modality_dropout import apply_modality_dropout, drop_generator, drop_modalities
from fusionbench.tasks.presence import forward_present, present_loss

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")  # steps called without a Trainer


def test_drop_rate_is_p_and_which_is_even():
    n, p = 20000, 0.3
    audio = torch.ones(n, dtype=torch.bool)
    video = torch.ones(n, dtype=torch.bool)
    video[:2000] = False  # 2,000 clips already without video: never dropped further
    a, v = drop_modalities(audio, video, p, torch.Generator().manual_seed(0))
    assert bool((a | v).all())  # no clip loses both
    assert bool(a[:2000].all()) and not bool(v[:2000].any())  # the audio-only clips are left as they were
    both = 18000
    dropped = int((~a[2000:] | ~v[2000:]).sum())
    sigma = (both * p * (1 - p)) ** 0.5
    assert abs(dropped - p * both) < 4 * sigma, dropped  # 5,400 ± 4σ (σ ≈ 61)
    audio_dropped = int((~a[2000:]).sum())
    assert abs(audio_dropped - dropped / 2) < 4 * (dropped * 0.25) ** 0.5  # audio or video with equal probability
    # seeded: the same generator seed draws the same clips; another seed draws others
    again = drop_modalities(audio, video, p, torch.Generator().manual_seed(0))
    other = drop_modalities(audio, video, p, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], a) and torch.equal(again[1], v)
    assert not torch.equal(other[0], a)
    a0, v0 = drop_modalities(audio, video, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(a0, audio) and torch.equal(v0, video)
    # the per-batch generator is a function of (seed, rank, step, batch) alone
    g1 = torch.rand(4, generator=drop_generator(3, 0, 5, 1))
    assert torch.equal(g1, torch.rand(4, generator=drop_generator(3, 0, 5, 1)))
    assert not torch.equal(g1, torch.rand(4, generator=drop_generator(3, 0, 6, 1)))


def _batch(n: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"audio": torch.randn(n, 1, 32, 160, generator=g), "video": torch.randn(n, 3, 16, 32, 32, generator=g),
            "label": torch.randint(0, 5, (n,), generator=g)}


def _task(fusion: str, p: float, **kw) -> ClassifyTask:
    torch.manual_seed(0)
    model = create_model(fusion, 5, "tiny", head_init="xavier").eval()  # eval: no stochastic depth
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"modality_dropout": p})
    return ClassifyTask(model, 5, False, cfg, **kw)


@pytest.mark.parametrize("fusion", ["mbt", "early"])
def test_dropped_clips_take_the_unimodal_path(fusion: str):
    """training_step's loss is forward_present's on the batch with the drawn masks — and the dropped clips' tensors
    are never read (NaN there changes nothing), so nothing is a zero tensor passed off as data."""
    task = _task(fusion, 0.5)
    batch = _batch()
    expected_masks = drop_modalities(torch.ones(12, dtype=torch.bool), torch.ones(12, dtype=torch.bool), 0.5,
                                     drop_generator(task.run_seed, 0, 0, 3))
    a_p, v_p = expected_masks
    assert 0 < int((~a_p | ~v_p).sum()) < 12  # some, not all, dropped: both paths are exercised
    poisoned = {**batch, "audio": batch["audio"].clone(), "video": batch["video"].clone()}
    poisoned["audio"][~a_p] = float("nan")
    poisoned["video"][~v_p] = float("nan")
    with torch.no_grad():
        loss = task.training_step(poisoned, 3)
        out = forward_present(task.model, batch["audio"], batch["video"], a_p, v_p)
        expected = present_loss(task.model, out, batch["label"], task.criterion)
        full = present_loss(task.model, forward_present(task.model, batch["audio"], batch["video"]),
                            batch["label"], task.criterion)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(loss, full)  # the drop changed the loss (the masks matter)
    # the unimodal path is the fusion's own: the logits of a dropped clip are model(one modality)
    row = int((~a_p).nonzero()[0])
    with torch.no_grad():
        alone = task.model(audio=None, video=batch["video"][row : row + 1]).logits
    torch.testing.assert_close(out.logits[row : row + 1], alone, atol=1e-5, rtol=1e-5)


def test_off_by_default_and_validation_and_test_untouched():
    batch = _batch()
    assert OmegaConf.structured(TrainConfig).modality_dropout == 0.0
    assert apply_modality_dropout(batch, 0.0, torch.Generator()) is batch
    conditions = [[parse_condition(n) for n in ("av", "audio_only", "video_only")]]
    results = []
    for p in (0.0, 1.0):  # p = 1 would drop a modality of every clip if it reached evaluation
        task = _task("late", p, test_conditions=conditions)
        with torch.no_grad():
            task.validation_step(batch, 0)
            task.test_step(batch, 0)
        task.on_test_epoch_end()
        results.append((task.val_metrics.compute(), task.test_results))
    (val0, test0), (val1, test1) = results
    assert {k: float(v) for k, v in val0.items()} == {k: float(v) for k, v in val1.items()}
    assert test0 == test1 and test0["test/av/clips"] == 12.0


def test_config_key_validated_and_in_the_identity():
    with pytest.raises(ConfigError, match="train.modality_dropout"):
        load_config(["train.modality_dropout=1.5"])
    base, dropped = load_config([]), load_config(["train.modality_dropout=0.5"])
    assert config_hash(base) != config_hash(dropped)
