"""The leak probe: at its ceiling on the real tasks, strong enough to flag the documented sync leak."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fusionbench.data import synthetic as S
from fusionbench.data.leak_probe import audio_features, leak_probe, leak_probe_synthetic, video_features

FAST = dict(n=500, test_frac=0.6, sample_rate=8000)  # 200 train, 300 test clips rendered in memory, 8 kHz audio


def test_leaky_sync_variant_is_flagged() -> None:
    """Events from frames 1 … T-2 only + circular shifts: bursts at the first/last frame occur only in negatives."""
    leaky = dataclasses.replace(S.TASKS["sync"], event_margin=1)
    result = leak_probe_synthetic("sync", seed=0, spec=leaky, **FAST)
    assert result["leak"] == ["audio"], result
    assert result["audio"] > 0.6 and result["video"] <= 0.55


@pytest.mark.parametrize("task", ["sync", "modsum"])
def test_interaction_tasks_are_at_chance_for_each_modality(task: str) -> None:
    result = leak_probe_synthetic(task, seed=0, **FAST)
    assert result["leak"] == [] and result["ceiling"] == result["chance"], result
    for modality in ("audio", "video"):
        assert abs(result[modality] - result["chance"]) < result["tolerance"], result


def test_joint_each_modality_reaches_its_quarter() -> None:
    """A modality alone knows its own factor: 4 of 16 classes, 25 %, far above chance (6 %): the probe sees it."""
    result = leak_probe_synthetic("joint", seed=0, **FAST)
    assert result["leak"] == [] and result["ceiling"] == 0.25
    for modality in ("audio", "video"):
        assert 0.17 < result[modality] <= 0.25 + result["tolerance"], result


def test_probe_is_deterministic() -> None:
    a = leak_probe_synthetic("modsum", n=100, seed=1, test_frac=0.5, sample_rate=8000)
    b = leak_probe_synthetic("modsum", n=100, seed=1, test_frac=0.5, sample_rate=8000)
    assert a == b


def test_features_keep_frame_positions() -> None:
    frames = np.zeros((2, 16, 32, 32, 3), np.uint8)
    frames[0, 3] = 200  # a flash at frame 3 in clip 0 only
    v = video_features(frames)
    assert v.shape[0] == 2 and not np.allclose(v[0], v[1])
    wave = np.zeros((2, 32000), np.float32)
    wave[0, 2000 * 5 : 2000 * 6] = np.sin(np.arange(2000) * 0.3)  # a burst in frame 5 of clip 0
    a = audio_features(wave, 16000, 16)
    assert a.shape[0] == 2 and not np.allclose(a[0], a[1])


def test_probe_on_written_mp4s(tmp_path: Path) -> None:
    """The manifest path decodes the mp4s (what models see) and reads the task from generator.json."""
    S.generate("modsum", 60, seed=0, out=tmp_path, workers=2, test_frac=0.5, val_frac=0.0)
    result = leak_probe(tmp_path, workers=2)
    assert result["task"] == "modsum" and result["n_test"] == 30 and result["n_train"] == 30
    assert result["leak"] == [] and 0.0 <= result["audio"] <= 1.0 and 0.0 <= result["video"] <= 1.0
