"""Corrupted test sets computed once per (preprocessing key, condition): bit-identical to the per-clip reference
(``Condition.corrupt`` + the fbank recomputed per item), stored in the decoded-tensor cache, loaded by later runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fusionbench.data.datamodule import AVDataModule, ClipDataset, corrupt_split
from fusionbench.evaluate.conditions import parse_condition

# one per corruption kind, plus the edge levels (no noise, nothing / everything occluded)
KINDS = ["audio_snr_0", "audio_snr_-10", "video_noise_0.25", "video_noise_0", "video_occlusion_0.5",
         "video_occlusion_0", "video_occlusion_1"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("condition_cache")


@pytest.fixture(scope="module")
def dm(synth_cfg_at, cache_dir: Path) -> AVDataModule:
    module = AVDataModule(synth_cfg_at(cache_dir), conditions=[parse_condition(n) for n in KINDS], decode_workers=1)
    module.setup()
    return module


@pytest.mark.parametrize("name", KINDS)
def test_corrupted_split_equals_the_per_clip_reference(dm: AVDataModule, name: str) -> None:
    condition = parse_condition(name)
    test = dm.data["test"]
    stored = corrupt_split(test, condition, dm.audio_features, chunk=4)  # 6 clips: chunks of 4 and 2
    assert torch.equal(stored.index, test.index)
    for i, index in enumerate(test.index.tolist()):
        waveform, frames = condition.corrupt(test.waveform[i], test.frames[i], index)
        if condition.corrupted_modality == "audio":
            assert stored.frames is None and torch.equal(stored.fbank[i], dm.audio_features.raw(waveform))
        else:
            assert stored.fbank is None and torch.equal(stored.frames[i], frames)
            assert torch.equal(dm.audio_features.raw(waveform), test.fbank[i])  # the clean audio, to the bit


@pytest.mark.parametrize("name", KINDS)
def test_served_items_equal_the_reference_path(dm: AVDataModule, synth_cfg_at, cache_dir: Path, name: str) -> None:
    """Items of the datamodule's corrupting dataset — computed, then loaded from the cache by a second module —
    are bit-identical to ``ClipDataset(condition=…)``, which corrupts each clip and recomputes its fbank."""
    condition = parse_condition(name)
    reference = ClipDataset(dm.data["test"], dm.labels("test"), dm.audio_features, dm.video_features,
                            condition=condition)
    computed = dm.dataset("test", condition)
    reloaded = AVDataModule(synth_cfg_at(cache_dir), conditions=[condition], decode_workers=1)
    loaded = reloaded.dataset("test", condition)
    assert reloaded.corrupt_count == 0 and reloaded.decode_count == 0  # everything came from the cache
    assert len(computed) == len(loaded) == len(reference) == 6
    for i in range(len(reference)):
        want = reference[i]
        for got in (computed[i], loaded[i]):
            assert got["index"] == want["index"] and torch.equal(got["label"], want["label"])
            assert torch.equal(got["audio"], want["audio"]) and torch.equal(got["video"], want["video"])


def test_corrupt_frames_matches_corrupt_per_clip() -> None:
    frames = torch.randint(0, 256, (5, 3, 7, 9, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    indices = [3, 0, 17, 4, 1000]
    for name in ("video_noise_0.3", "video_occlusion_0.2", "video_occlusion_0.9", "audio_snr_5"):
        condition = parse_condition(name)
        batch = condition.corrupt_frames(frames, indices)
        for i, index in enumerate(indices):
            assert torch.equal(batch[i], condition.corrupt(torch.zeros(4), frames[i], index)[1]), name
    assert parse_condition("video_noise_0.3").corrupt_frames(frames[:0], []).shape == (0, 3, 7, 9, 3)


def test_test_loaders_are_served_from_the_cache(synth_cfg, tmp_path: Path) -> None:
    conditions = [parse_condition(n) for n in ("av", "audio_snr_0", "video_occlusion_0.5")]
    first = AVDataModule(synth_cfg(), conditions=conditions, decode_workers=1)
    batches = [next(iter(loader)) for loader in first.test_dataloader()]
    assert first.corrupt_count == 2
    assert sorted(p.name for p in first.cache.dir.glob("test.*.pt")) == [
        "test.audio_snr_0.pt", "test.video_occlusion_0.5.pt"]
    first.test_dataloader()
    assert first.corrupt_count == 2  # kept in memory by the module, not recomputed per call
    second = AVDataModule(synth_cfg(), conditions=conditions, decode_workers=1)
    again = [next(iter(loader)) for loader in second.test_dataloader()]
    assert second.corrupt_count == 0 and second.cache.hits == 3 + 2 and second.cache.misses == 0
    for a, b in zip(batches, again):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_disabled_cache_computes_in_memory(synth_cfg, tmp_path: Path) -> None:
    condition = parse_condition("video_noise_0.5")
    module = AVDataModule(synth_cfg(cache_dir=""), conditions=[condition], decode_workers=1)
    loaders = module.test_dataloader()
    assert len(loaders) == 2 and module.corrupt_count == 1 and module.cache.dir is None
    assert not (tmp_path / "cache").exists()
    clean = module.data["test"]
    assert not torch.equal(module.corrupted("test", condition).frames, clean.frames)
    assert module.corrupted("test", condition).fbank is clean.fbank  # the clean audio is shared, not copied
