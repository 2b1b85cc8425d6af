"""The decoded-tensor cache: hit, miss, invalidation by preprocessing keys, atomic writes, a corrupt entry; the
corrupted test sets it stores per condition."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionbench.data.cache import CorruptedSplit, DecodedSplit, SplitCache, cache_key
from fusionbench.data.datamodule import AVDataModule
from fusionbench.evaluate.conditions import parse_condition


def _split(n: int = 3) -> DecodedSplit:
    return DecodedSplit(
        index=torch.arange(n), frames=torch.zeros(n, 2, 4, 4, 3, dtype=torch.uint8),
        fbank=torch.randn(n, 1, 8, 10).half(), has_audio=torch.ones(n, dtype=torch.bool), waveform=torch.randn(n, 16),
        skipped=[("a.mp4", "file not found")], padded_frames=torch.arange(n, dtype=torch.int32),
    )


def test_split_cache_miss_then_hit(tmp_path: Path) -> None:
    cache = SplitCache(tmp_path, {"a": 1})
    built = []
    first = cache.get_or_build("train", lambda: built.append(1) or _split())
    second = SplitCache(tmp_path, {"a": 1}).get_or_build("train", lambda: built.append(1) or _split())
    assert built == [1]  # built once
    for name in ("index", "frames", "fbank", "waveform", "has_audio", "has_video", "padded_frames", "padded_audio_s"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert second.fbank.dtype == torch.float16 and second.padded_frames.tolist() == [0, 1, 2]
    assert second.skipped == [("a.mp4", "file not found")]
    assert (cache.hits, cache.misses) == (0, 1)
    assert sorted(p.name for p in cache.dir.iterdir()) == ["meta.json", "train"]  # no temporary files left
    assert sorted(p.name for p in cache.path("train").iterdir()) == [
        "COMPLETE", "fbank.npy", "frames.npy", "has_audio.npy", "has_video.npy", "index.npy", "padded_audio_s.npy",
        "padded_frames.npy", "skipped.json", "waveform.npy"]


def test_key_changes_with_any_parameter() -> None:
    base = {"decode": {"size": 32, "num_frames": 16}, "manifest_sha256": "ab"}
    assert cache_key(base) == cache_key({"manifest_sha256": "ab", "decode": {"num_frames": 16, "size": 32}})
    assert cache_key(base) != cache_key({**base, "manifest_sha256": "ac"})
    assert cache_key(base) != cache_key({**base, "decode": {"size": 64, "num_frames": 16}})


def test_disabled_cache_always_builds() -> None:
    cache = SplitCache(None, {"a": 1})
    built = []
    for _ in range(2):
        cache.get_or_build("val", lambda: built.append(1) or _split())
    assert built == [1, 1] and cache.dir is None


def test_a_killed_write_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = SplitCache(tmp_path, {"a": 2})
    real_save = np.save

    def dies_midway(file, array, *args, **kwargs):
        if Path(file).name == "waveform.npy":
            raise KeyboardInterrupt  # as if the process were killed while writing
        real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        cache.put("test", _split())
    assert not cache.path("test").exists() and cache.get("test") is None
    assert [p.name for p in cache.dir.iterdir()] == ["meta.json"]


def test_a_folder_without_its_marker_is_not_read(tmp_path: Path) -> None:
    cache = SplitCache(tmp_path, {"a": 6})
    cache.put("val", _split())
    (cache.path("val") / "COMPLETE").unlink()
    assert cache.get("val") is None


def test_an_unreadable_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = SplitCache(tmp_path, {"a": 3})
    cache.put("train", _split())
    (cache.path("train") / "fbank.npy").write_bytes(b"corrupt")
    built = []
    data = cache.get_or_build("train", lambda: built.append(1) or _split(2))
    assert built == [1] and len(data) == 2 and cache.misses == 1


@pytest.fixture(scope="module")
def warm_cache(synth_cfg_at, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache filled once by the default tiny config (read-only for the tests that use it)."""
    cache_dir = tmp_path_factory.mktemp("warm_cache")
    AVDataModule(synth_cfg_at(cache_dir), decode_workers=1).setup()
    return cache_dir


def test_second_setup_decodes_nothing(synth_cfg) -> None:
    first = AVDataModule(synth_cfg(), decode_workers=1)
    first.setup()
    assert first.decode_count == 40 and first.cache.misses == 3 and first.cache.hits == 0
    second = AVDataModule(synth_cfg(), decode_workers=1)
    second.setup()
    assert second.decode_count == 0 and second.cache.hits == 3
    for split in ("train", "val", "test"):
        assert torch.equal(first.data[split].frames, second.data[split].frames)
        assert torch.equal(first.data[split].fbank, second.data[split].fbank)
    assert second.data["test"].waveform.shape == (6, 32000) and second.data["train"].waveform is None


@pytest.mark.parametrize(
    "key, value, invalidates",
    [
        ("audio.num_mel_bins", 16, True),
        ("audio.frame_shift_ms", 10.0, True),
        ("audio.target_length", 128, True),
        ("video.size", 16, True),  # also another synthetic variant, generated on the new grid
        ("audio.norm_mean", -4.0, False),  # applied at load time
        ("audio.freqm", 8, False),  # SpecAugment is applied per batch
        ("batch_size", 4, False),
    ],
)
def test_preprocessing_keys_invalidate(synth_cfg, warm_cache: Path, key: str, value, invalidates: bool) -> None:
    changed = AVDataModule(synth_cfg(cache_dir=str(warm_cache), **{key: value}), decode_workers=1)
    changed.setup()
    assert (changed.decode_count > 0) == invalidates
    assert (changed.cache.hits == 0) == invalidates


def test_manifest_content_is_part_of_the_key(synth_cfg, tmp_path: Path) -> None:
    cfg = synth_cfg()
    dm = AVDataModule(cfg, decode_workers=1)
    manifest = dm.manifest_path
    copy = tmp_path / "copy" / "clips.csv"
    copy.parent.mkdir()
    lines = manifest.read_text().splitlines(keepends=True)
    copy.write_text("".join(lines[:-1]))  # one clip fewer
    (copy.parent / "clips").symlink_to(manifest.parent / "clips")
    dm.setup()
    other = AVDataModule(synth_cfg(manifest=str(copy)), decode_workers=1)
    other.setup()
    assert other.cache.key != dm.cache.key and other.decode_count == 39


def test_a_media_file_rewritten_in_place_is_part_of_the_key(synth_cfg, tmp_path: Path, write_mp4) -> None:
    """A regenerated set keeps its clips.csv byte for byte; its new media must not be served from the old tensors."""
    source = AVDataModule(synth_cfg(), decode_workers=1).manifest_path.parent
    copy = tmp_path / "set"
    shutil.copytree(source, copy)
    cfg = synth_cfg(manifest=str(copy / "clips.csv"))
    first = AVDataModule(cfg, decode_workers=1)
    first.setup()
    row = int(first.data["train"].index[0])
    path = first._read_manifest()[row].path
    frames = np.full((16, 32, 32, 3), 255, dtype=np.uint8)
    write_mp4(path, frames, np.zeros(32000, dtype=np.float32))  # the same name, other content
    again = AVDataModule(cfg, decode_workers=1)
    again.setup()
    assert again.cache.key != first.cache.key and again.decode_count == first.decode_count
    assert again.data["train"].frames[0].float().mean() > 250 > first.data["train"].frames[0].float().mean()


# ------------------------------------------------------------------------------------------------ conditions


def _corrupted(name: str, n: int = 3, version: int = 1) -> CorruptedSplit:
    return CorruptedSplit(condition=name, version=version, index=torch.arange(n), fbank=torch.randn(n, 1, 8, 10))


def test_condition_entries_hit_per_condition_and_miss_when_stale(tmp_path: Path) -> None:
    cache = SplitCache(tmp_path, {"a": 4})
    index = torch.arange(3)
    built = []

    def get(name: str, params=None, version: int = 1, index: torch.Tensor = index) -> CorruptedSplit:
        c = cache if params is None else SplitCache(tmp_path, params)
        return c.get_or_build_condition("test", name, lambda: built.append(name) or _corrupted(name, version=version),
                                        index=index, version=version)

    snr = get("audio_snr_0")
    assert torch.equal(get("audio_snr_0").fbank, snr.fbank) and built == ["audio_snr_0"]  # second lookup: a hit
    assert not torch.equal(get("audio_snr_-10").fbank, snr.fbank)  # another condition: its own entry
    assert built == ["audio_snr_0", "audio_snr_-10"] and (cache.hits, cache.misses) == (1, 2)
    assert sorted(p.name for p in cache.dir.iterdir()) == ["meta.json", "test.audio_snr_-10.pt", "test.audio_snr_0.pt"]
    get("audio_snr_0", params={"a": 5})  # other preprocessing: another key
    get("audio_snr_0", version=2)  # other corruption code
    assert built[2:] == ["audio_snr_0", "audio_snr_0"]
    assert cache.get_condition("test", "audio_snr_0", index=torch.arange(1, 4), version=2) is None  # other clips
    with pytest.raises(ValueError, match="file name"):
        cache.condition_path("test", "../escape")


def test_condition_cache_follows_preprocessing_and_is_distinct_per_condition(synth_cfg) -> None:
    names = ["audio_snr_0", "audio_snr_10", "video_noise_0.25"]

    def module(*conditions: str, **overrides) -> AVDataModule:
        dm = AVDataModule(synth_cfg(**overrides), conditions=[parse_condition(n) for n in conditions],
                          decode_workers=1)
        dm.test_dataloader()
        return dm

    first = module(*names[:2])
    assert first.corrupt_count == 2
    a, b = (first.corrupted("test", parse_condition(n)).fbank for n in names[:2])
    assert not torch.equal(a, b)  # one entry per condition, not one shared
    more = module(*names)
    assert more.corrupt_count == 1 and more.cache.key == first.cache.key  # only the new condition is computed
    assert module(*names, **{"audio.norm_mean": -4.0}).corrupt_count == 0  # normalised at load time: same entries
    changed = module(*names, **{"audio.num_mel_bins": 16})
    assert changed.cache.key != first.cache.key and changed.corrupt_count == 3  # preprocessing changed: rebuilt
    assert changed.corrupted("test", parse_condition("audio_snr_0")).fbank.shape[2] == 16
    assert changed.corrupted("test", parse_condition("video_noise_0.25")).fbank.shape[2] == 16
