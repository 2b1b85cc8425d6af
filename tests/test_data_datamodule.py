"""AVDataModule: the batch contract, splits, SpecAugment in training only, test loaders per condition, bad clips;
and the generic clips.csv manifest it reads."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.config import DataConfig
from fusionbench.data.datamodule import AVDataModule, ClipDataset, decode_split
from fusionbench.data.integrity import assign_splits
from fusionbench.data.manifest import ManifestError, read_manifest
from fusionbench.data.media import MediaError
from fusionbench.evaluate.conditions import parse_condition

CONDITIONS = [parse_condition(n) for n in ("av", "audio_only", "video_only", "audio_snr_0", "video_noise_0.2")]


@pytest.fixture(scope="module")
def shared_cfg(synth_cfg_at, tmp_path_factory: pytest.TempPathFactory):
    """``shared_cfg(**overrides)``: configs sharing one cache across this module (decoded once)."""
    cache_dir = tmp_path_factory.mktemp("shared_cache")
    return lambda **overrides: synth_cfg_at(cache_dir, **overrides)


@pytest.fixture(scope="module")
def dm(shared_cfg) -> AVDataModule:
    module = AVDataModule(shared_cfg(), seed=0, conditions=CONDITIONS, decode_workers=1)
    module.setup()
    return module


def test_batch_contract(dm: AVDataModule) -> None:
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"audio", "video", "label", "index", "audio_present", "video_present"}
    assert batch["audio_present"].dtype == torch.bool and bool(batch["audio_present"].all() & batch["video_present"].all())
    assert batch["audio"].shape == (8, 1, 32, 160) and batch["audio"].dtype == torch.float32
    assert batch["video"].shape == (8, 3, 16, 32, 32) and batch["video"].dtype == torch.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == torch.int64
    assert batch["index"].shape == (8,) and batch["index"].dtype == torch.int64
    assert dm.num_classes == 16 and len(dm.class_names) == 16 and not dm.multilabel
    assert dm.audio_shape == (32, 160) and dm.video_shape == (16, 32, 32)
    assert set(dm.norm_stats) == {"audio_mean", "audio_std", *(f"video_{s}_{c}" for s in ("mean", "std") for c in "rgb")}


def _stacked(dm: AVDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dm.dataset(split)[i] for i in range(len(dm.data[split]))]
    return torch.stack([x["audio"] for x in items]), torch.stack([x["video"] for x in items])


def test_train_statistics_normalise_the_training_split(dm: AVDataModule) -> None:
    audio, video = _stacked(dm, "train")  # (N, 1, n_mels, L), (N, 3, T, H, W)
    assert abs(audio.double().mean().item()) < 1e-4 and abs(audio.double().std().item() - 1) < 1e-4
    per_channel = video.double().transpose(0, 1).reshape(3, -1)  # (3, N·T·H·W)
    assert per_channel.mean(1).abs().max() < 1e-4 and (per_channel.std(1) - 1).abs().max() < 1e-3
    pixels = dm.data["train"].frames.double().div(255).reshape(-1, 3).numpy()  # reference: numpy, float64
    np.testing.assert_allclose([dm.norm_stats[f"video_mean_{c}"] for c in "rgb"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose([dm.norm_stats[f"video_std_{c}"] for c in "rgb"], pixels.std(0), rtol=1e-9)
    test_audio, test_video = _stacked(dm, "test")  # the train statistics apply to every split
    raw = dm.data["test"].fbank.float()  # stored float16, normalised in float32
    torch.testing.assert_close(test_audio, (raw - dm.norm_stats["audio_mean"]) / dm.norm_stats["audio_std"])


def test_batched_fetch_is_bit_identical_to_per_item(dm: AVDataModule) -> None:
    from torch.utils.data import default_collate

    for split in ("train", "test"):
        dataset = dm.dataset(split)
        rows = [5, 0, 3, 3] if split == "train" else [1, 2]
        batched = dataset.__getitems__(rows)
        reference = default_collate([dataset[i] for i in rows])
        assert batched.keys() == reference.keys()
        for key in reference:
            assert batched[key].dtype == reference[key].dtype
            assert torch.equal(batched[key], reference[key]), key


def test_config_statistics_are_used_as_given(shared_cfg) -> None:
    module = AVDataModule(shared_cfg(norm_stats="config"), seed=0, decode_workers=1)
    module.setup()
    audio, video = _stacked(module, "train")
    assert module.norm_stats == {}
    torch.testing.assert_close(audio, module.data["train"].fbank.float())  # norm_mean 0, norm_std 1
    assert video.min() >= -1 and video.max() <= 1  # (x/255 - 0.5) / 0.5


def test_splits_are_disjoint_and_labels_match_the_manifest(dm: AVDataModule) -> None:
    clips, _ = read_manifest(dm.manifest_path)
    seen = {}
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()),
                          ("test", dm.test_dataloader()[0])):
        for batch in loader:
            for index, label in zip(batch["index"].tolist(), batch["label"].tolist()):
                assert index not in seen  # each clip in exactly one split, once
                seen[index] = split
                assert clips[index].split == split and clips[index].labels == (label,)
    assert sorted(seen) == list(range(40))
    assert [list(seen.values()).count(s) for s in ("train", "val", "test")] == [28, 6, 6]


def test_train_shuffle_follows_the_seed(shared_cfg) -> None:
    def first_indices(seed: int) -> list[int]:
        module = AVDataModule(shared_cfg(), seed=seed, decode_workers=1)
        module.setup()
        return next(iter(module.train_dataloader()))["index"].tolist()

    assert first_indices(0) == first_indices(0)
    assert first_indices(0) != first_indices(1)


def test_workers_give_reproducible_augmented_batches(shared_cfg) -> None:
    """With DataLoader workers, order and SpecAugment masks follow the seed (workers seeded from the generator)."""
    cfg = shared_cfg(**{"audio.freqm": 12, "audio.timem": 60, "num_workers": 2})

    def first_batch(seed: int) -> dict:
        module = AVDataModule(cfg, seed=seed, decode_workers=1)
        module.setup()
        return next(iter(module.train_dataloader()))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["audio"], b["audio"])
    assert not torch.equal(a["audio"], c["audio"])


def test_augmented_batched_fetch_is_bit_identical_to_per_item(shared_cfg) -> None:
    """The train split's batched fetch applies SpecAugment clip by clip, drawing what the per-item path draws."""
    from torch.utils.data import default_collate

    module = AVDataModule(shared_cfg(**{"audio.freqm": 12, "audio.timem": 60}), decode_workers=1)
    module.setup()
    dataset, rows = module.dataset("train"), [5, 0, 3, 3, 1, 2]
    torch.manual_seed(7)
    batched = dataset.__getitems__(rows)
    torch.manual_seed(7)
    reference = default_collate([dataset[i] for i in rows])
    assert isinstance(batched, dict)  # the vectorised path ran, not the per-item fallback
    for key in reference:
        assert torch.equal(batched[key], reference[key]), key
    clean = module.audio_features.normalise(module.data["train"].fbank[rows])  # (B, 1, n_mels, L)
    masked = [not torch.equal(a, c) for a, c in zip(batched["audio"], clean)]
    assert all(masked)  # every clip got its masks
    assert not torch.equal(batched["audio"][2], batched["audio"][3])  # the same clip twice: masks drawn anew


def test_spec_augment_only_in_training(shared_cfg) -> None:
    module = AVDataModule(shared_cfg(**{"audio.freqm": 12, "audio.timem": 60}), decode_workers=1)
    module.setup()
    torch.manual_seed(0)
    for split in ("train", "val", "test"):
        dataset = module.dataset(split)
        changed = 0
        for i in range(len(dataset)):
            clean = module.audio_features.normalise(module.data[split].fbank[i])
            changed += not torch.equal(dataset[i]["audio"], clean)
        assert (changed > 0) == (split == "train"), split


def test_test_loaders_follow_the_conditions(dm: AVDataModule) -> None:
    loaders = dm.test_dataloader()
    assert len(loaders) == 3
    assert [[c.name for c in cs] for cs in dm.test_conditions] == [
        ["av", "audio_only", "video_only"], ["audio_snr_0"], ["video_noise_0.2"],
    ]
    clean, snr, noise = (next(iter(loader)) for loader in loaders)
    for batch in (snr, noise):
        assert torch.equal(batch["index"], clean["index"]) and torch.equal(batch["label"], clean["label"])
    assert not torch.allclose(snr["audio"], clean["audio"]) and torch.equal(snr["video"], clean["video"])
    assert torch.equal(noise["audio"], clean["audio"]) and not torch.equal(noise["video"], clean["video"])
    assert torch.equal(next(iter(dm.test_dataloader()[1]))["audio"], snr["audio"])  # deterministic corruption


def test_video_conditions_keep_the_clean_audio(dm: AVDataModule) -> None:
    """A video corruption serves the clean audio; the per-clip reference path, which recomputes the fbank from the
    (unchanged) waveform, gives the same bits."""
    video_only_noise = parse_condition("video_noise_0.1")
    dataset = dm.dataset("test", video_only_noise)
    reference = ClipDataset(dm.data["test"], dm.labels("test"), dm.audio_features, dm.video_features,
                            condition=video_only_noise)
    clean = dm.dataset("test")
    for i in range(len(dataset)):
        assert torch.equal(dataset[i]["audio"], clean[i]["audio"])
        assert torch.equal(reference[i]["audio"], clean[i]["audio"])


def test_parallel_decode_gives_the_same_tensors(dm: AVDataModule) -> None:
    clips = dm._read_manifest()
    members = [(row, c) for row, c in enumerate(clips) if c.split == "test"]
    kwargs = dict(decode_kwargs=dm._decode_kwargs(), audio=dm.audio_features, keep_waveform=True)
    serial = decode_split(members, workers=1, **kwargs)
    parallel = decode_split(members, workers=2, min_parallel=1, **kwargs)
    for name in ("index", "frames", "fbank", "waveform", "has_audio", "has_video", "padded_frames", "padded_audio_s"):
        assert torch.equal(getattr(serial, name), getattr(parallel, name)), name
        assert torch.equal(getattr(serial, name), getattr(dm.data["test"], name)), name  # in memory = the store


def test_no_conditions_gives_one_clean_loader(shared_cfg) -> None:
    module = AVDataModule(shared_cfg(), decode_workers=1)
    assert len(module.test_dataloader()) == 1 and module.test_conditions == [[]]


# ------------------------------------------------------------------------------------------------ bad clips


@pytest.fixture
def clips_dir(tmp_path: Path, write_mp4) -> Path:
    """A generic clips.csv: 8 good clips, then a missing file, a corrupt file and an mp4 without audio."""
    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for i in range(8):
        frames = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
        write_mp4(tmp_path / f"good{i}.mp4", frames, (0.1 * rng.standard_normal(32000)).astype(np.float32))
        rows.append(f"good{i}.mp4,{'cat' if i % 2 else 'dog'},{['train', 'train', 'test', 'val'][i % 4]}")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    write_mp4(tmp_path / "silent.mp4", np.zeros((16, 32, 32, 3), np.uint8))
    rows += ["missing.mp4,dog,train", "corrupt.mp4,cat,test", "silent.mp4,dog,train"]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _clips_cfg(root: Path, on_error: str, **overrides):
    return OmegaConf.merge(
        OmegaConf.structured(DataConfig),
        {"dataset": "clips", "root": str(root), "cache_dir": str(root / "cache"), "on_error": on_error,
         "batch_size": 16, **overrides},
    )


def test_bad_clip_raises_naming_the_file(clips_dir: Path) -> None:
    module = AVDataModule(_clips_cfg(clips_dir, "raise"), decode_workers=1)
    with pytest.raises(MediaError, match=r"missing\.mp4: file not found"):
        module.setup()


def test_bad_clips_are_skipped_counted_and_reported(clips_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    module = AVDataModule(_clips_cfg(clips_dir, "skip", missing_modality="skip"), decode_workers=1)
    with caplog.at_level(logging.WARNING, logger="fusionbench.data.datamodule"):
        module.setup()
    reasons = {Path(p).name: r for p, r in module.skipped}
    assert set(reasons) == {"missing.mp4", "corrupt.mp4", "silent.mp4"}
    assert reasons["missing.mp4"] == "file not found"
    assert reasons["silent.mp4"] == "no audio stream (left out by data.missing_modality=skip)"
    report = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 3 of 11 clips" in report and "missing.mp4" in report
    seen = [i for loader in (module.train_dataloader(), module.val_dataloader(), module.test_dataloader()[0])
            for batch in loader for i in batch["index"].tolist()]
    assert sorted(seen) == list(range(8))  # rows 8, 9, 10 are the bad ones
    assert module.class_names == ["cat", "dog"]
    # a cached skip does not hide bad clips from a later on_error=raise run
    with pytest.raises(MediaError, match="missing.mp4"):
        AVDataModule(_clips_cfg(clips_dir, "raise", missing_modality="skip"), decode_workers=1).setup()


def write_audio_only(path: Path, waveform: np.ndarray, sample_rate: int = 16000) -> Path:
    """An mp4 with one AAC stream and no video."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(waveform[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture
def modality_dir(tmp_path: Path, write_mp4) -> Path:
    """Six good clips (train, val, test), a video-only mp4 and an audio-only mp4 (both train)."""
    rng = np.random.default_rng(1)
    rows = ["path,label,split"]
    for i in range(6):
        frames = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
        write_mp4(tmp_path / f"good{i}.mp4", frames, (0.1 * rng.standard_normal(32000)).astype(np.float32))
        rows.append(f"good{i}.mp4,{'cat' if i % 2 else 'dog'},{['train', 'train', 'val', 'test'][i % 4]}")
    write_mp4(tmp_path / "silent.mp4", np.full((16, 32, 32, 3), 200, np.uint8))  # no audio stream
    write_audio_only(tmp_path / "blind.mp4", (0.1 * rng.standard_normal(32000)).astype(np.float32))  # no video
    rows += ["silent.mp4,dog,train", "blind.mp4,cat,train"]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.parametrize("cache", [True, False])
def test_missing_modality_absent_keeps_the_clip_marked_absent(modality_dir: Path, cache: bool) -> None:
    cfg = _clips_cfg(modality_dir, "raise", missing_modality="absent", **({} if cache else {"cache_dir": ""}))
    module = AVDataModule(cfg, decode_workers=1)
    module.setup()
    assert module.skipped == []
    train = module.data["train"]
    names = [module.clips[row].path.name for row in train.index.tolist()]
    silent, blind = names.index("silent.mp4"), names.index("blind.mp4")
    assert train.has_audio.tolist() == [i != silent for i in range(len(names))]
    assert train.has_video.tolist() == [i != blind for i in range(len(names))]
    assert not train.fbank[silent].any() and not train.frames[blind].any()  # placeholders, never data
    batch = next(iter(module.train_dataloader()))
    by_name = {module.clips[i].path.name: (a, v) for i, a, v in zip(
        batch["index"].tolist(), batch["audio_present"].tolist(), batch["video_present"].tolist())}
    assert by_name["silent.mp4"] == (False, True) and by_name["blind.mp4"] == (True, False)
    # the statistics come from the clips that have the modality: the placeholders' zeros are not pixels
    seen = train.frames[train.has_video].double().div(255).reshape(-1, 3).numpy()
    np.testing.assert_allclose([module.norm_stats[f"video_mean_{c}"] for c in "rgb"], seen.mean(0), rtol=1e-9)
    heard = train.fbank[train.has_audio].double()
    assert module.norm_stats["audio_mean"] == pytest.approx(heard.mean().item(), rel=1e-12)
    assert module.norm_stats["audio_std"] == pytest.approx(heard.std().item(), rel=1e-9)


def test_missing_modality_skip_leaves_the_clips_out_naming_the_setting(modality_dir: Path) -> None:
    module = AVDataModule(_clips_cfg(modality_dir, "raise", missing_modality="skip"), decode_workers=1)
    module.setup()  # on_error=raise: a policy skip is not a decoding failure
    assert {Path(p).name: r for p, r in module.skipped} == {
        "silent.mp4": "no audio stream (left out by data.missing_modality=skip)",
        "blind.mp4": "no video stream (left out by data.missing_modality=skip)"}
    assert len(module.data["train"]) == 4 and bool(module.data["train"].has_audio.all())
    again = AVDataModule(_clips_cfg(modality_dir, "raise", missing_modality="skip"), decode_workers=1)
    again.setup()  # from the store: the cached policy skips do not raise either
    assert again.decode_count == 0 and len(again.skipped) == 2


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_missing_modality_error_raises_naming_the_file(modality_dir: Path, on_error: str) -> None:
    module = AVDataModule(_clips_cfg(modality_dir, on_error, missing_modality="error"), decode_workers=1)
    with pytest.raises(MediaError, match=r"silent\.mp4: no audio stream \(data\.missing_modality=error"):
        module.setup()


def test_missing_modality_is_part_of_the_cache_key(modality_dir: Path) -> None:
    keys = set()
    for policy in ("absent", "skip"):
        module = AVDataModule(_clips_cfg(modality_dir, "raise", missing_modality=policy), decode_workers=1)
        module.setup()
        keys.add(module.cache.key)
        assert module.decode_count == 8
    assert len(keys) == 2


def test_multilabel_batches_are_multi_hot(tmp_path: Path, write_mp4) -> None:
    frames = np.zeros((16, 32, 32, 3), np.uint8)
    for i in range(4):
        write_mp4(tmp_path / f"c{i}.mp4", frames, np.zeros(32000, np.float32))
    (tmp_path / "clips.csv").write_text(
        "path,label,split\nc0.mp4,speech|music,train\nc1.mp4,dog,train\nc2.mp4,music|dog|speech,test\n"
        "c3.mp4,music,val\n"
    )
    cfg = OmegaConf.merge(_clips_cfg(tmp_path, "raise"), {"multilabel": True})
    module = AVDataModule(cfg, decode_workers=1)
    module.setup()
    assert module.multilabel and module.class_names == ["dog", "music", "speech"]
    batch = next(iter(module.train_dataloader()))
    assert batch["label"].dtype == torch.float32 and batch["label"].shape == (2, 3)
    by_index = dict(zip(batch["index"].tolist(), batch["label"].tolist()))
    assert by_index == {0: [0.0, 1.0, 1.0], 1: [1.0, 0.0, 0.0]}


# ------------------------------------------------------------------------------------------------ manifest


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_manifest_names_map_to_sorted_indices_and_paths_resolve(tmp_path: Path) -> None:
    csv_path = _write(tmp_path / "clips.csv",
                      "path,label,start_s,end_s,split,note\na.mp4,zebra,1.5,3.5,validation,x\n/abs/b.mp4,ant,,,,\n")
    clips, names = read_manifest(csv_path)
    assert names == ["ant", "zebra"]
    assert clips[0].path == tmp_path / "a.mp4" and clips[0].labels == (1,) and clips[0].split == "val"
    assert (clips[0].start_s, clips[0].end_s, clips[0].extras) == (1.5, 3.5, {"note": "x"})
    assert clips[1].path == Path("/abs/b.mp4") and clips[1].split is None and clips[1].end_s is None
    other_root, _ = read_manifest(csv_path, root="/data")
    assert other_root[0].path == Path("/data/a.mp4")


def test_manifest_integer_labels_are_indices(tmp_path: Path) -> None:
    clips, names = read_manifest(_write(tmp_path / "c.csv", "path,label\na.mp4,3\nb.mp4,0\n"))
    assert [c.labels for c in clips] == [(3,), (0,)] and names == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,label\na.mp4,1\n", r"line 1: header .* lacks column\(s\) path"),
        ("path,label\na.mp4,1,extra\n", "line 2: 3 fields, header has 2"),
        ("path,label\na.mp4,1\nb.mp4,\n", "line 3: empty label"),
        ("path,label\na.mp4,cat|dog\n", "line 2: several labels 'cat|dog' in a single-label manifest"),
        ("path,label,split\na.mp4,1,holdout\n", "line 2: unknown split 'holdout'"),
        ("path,label,start_s\na.mp4,1,soon\n", "line 2: start_s='soon' is not a number"),
        ("path,label,start_s,end_s\na.mp4,1,5,2\n", "line 2: bad window"),
        ("", "empty file"),
    ],
)
def test_malformed_manifest_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    csv_path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(csv_path)
    assert str(csv_path) in str(info.value)


def test_missing_splits_are_assigned_by_group(tmp_path: Path) -> None:
    """Flat files without a group: each its own video (``integrity.assign_splits`` falls back to the file)."""
    text = "path,label\n" + "".join(f"v{i}.mp4,{i % 3}\n" for i in range(400))
    clips, _ = read_manifest(_write(tmp_path / "c.csv", text))
    a = [c.split for c in assign_splits(clips, 0.15, 0.15)]
    assert a == [c.split for c in assign_splits(list(reversed(clips)), 0.15, 0.15)][::-1]  # order-free
    assert 30 < a.count("test") < 90 and 30 < a.count("val") < 90
