"""Windows of a clip (data/windows.py), several windows per item (ClipDataset) and multi-clip evaluation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.config import AudioConfig, VideoConfig
from fusionbench.data.cache import DecodedSplit
from fusionbench.data.clip_dataset import ClipDataset, collate
from fusionbench.data.features import AudioFeatures, VideoFeatures
from fusionbench.data.manifest import Clip
from fusionbench.data.windows import clip_window_start, window_start
from fusionbench.registry import create_model
from fusionbench.tasks.presence import forward_present, forward_windows


def test_window_placement() -> None:
    assert window_start(0.0, 10.0, 2.0) == 4.0  # one window: centred
    assert window_start(3.0, 13.0, 2.0) == 7.0
    starts = [window_start(0.0, 10.0, 2.0, k, 4) for k in range(4)]
    assert starts == pytest.approx([1.0, 3.0, 5.0, 7.0])  # evenly spread, equal margins at both ends
    assert window_start(5.0, 6.0, 2.0) == 4.5  # a short segment: centred on it
    assert window_start(0.5, 1.0, 2.0) == 0.0  # never before the file's start
    assert window_start(2.0, None, 2.0) == 2.0  # unknown end: where the row says
    assert window_start(0.0, 2.05, 2.0, tolerance_s=0.125) == 0.0  # a rounded container duration
    assert window_start(0.0, 2.05, 2.0) == pytest.approx(0.025)
    with pytest.raises(ValueError):
        window_start(0.0, 10.0, 2.0, 4, 4)


def test_a_trimmed_clip_longer_than_the_window_is_centred_on_its_file(tmp_path, write_mp4) -> None:
    frames = np.zeros((48, 16, 16, 3), np.uint8)  # 6 s at 8 fps
    path = write_mp4(tmp_path / "long.mp4", frames, np.zeros(6 * 16000, np.float32))
    clip = Clip(path, (0,), "test")
    assert clip_window_start(clip, 2.0, 16) == pytest.approx(2.0, abs=0.07)  # (6 − 2) / 2, within the AAC priming
    ends = [clip_window_start(clip, 2.0, 16, k, 2) for k in range(2)]
    assert ends == pytest.approx([1.0, 3.0], abs=0.07)
    short = write_mp4(tmp_path / "short.mp4", frames[:16], np.zeros(2 * 16000, np.float32))  # exactly the window
    assert clip_window_start(Clip(short, (0,), "test"), 2.0, 16) == 0.0


def _split(seed: int, n: int = 5) -> DecodedSplit:
    g = torch.Generator().manual_seed(seed)
    return DecodedSplit(
        index=torch.arange(10, 10 + n), frames=torch.randint(0, 256, (n, 16, 32, 32, 3), generator=g, dtype=torch.uint8),
        fbank=torch.randn(n, 1, 32, 160, generator=g).half(), has_audio=torch.tensor([True, False, True, True, True]))


def _features():
    return AudioFeatures(OmegaConf.structured(AudioConfig)), VideoFeatures(OmegaConf.structured(VideoConfig))


def test_stacked_windows_are_each_windows_items() -> None:
    audio, video = _features()
    windows = [_split(1), _split(2), _split(3)]
    labels = torch.arange(5)
    stacked = ClipDataset(windows, labels, audio, video, pick="stack")
    item = stacked[2]
    assert item["audio"].shape == (3, 1, 32, 160) and item["video"].shape == (3, 3, 16, 32, 32)
    for w, split in enumerate(windows):
        alone = ClipDataset(split, labels, audio, video)[2]
        torch.testing.assert_close(item["audio"][w], alone["audio"], atol=0, rtol=0)
        torch.testing.assert_close(item["video"][w], alone["video"], atol=0, rtol=0)
    batched = collate(stacked.__getitems__([0, 3, 1]))  # the vectorised path gives the same batch
    reference = collate([stacked[i] for i in (0, 3, 1)])
    for key in reference:
        torch.testing.assert_close(batched[key], reference[key], atol=0, rtol=0)
    assert batched["audio"].shape == (3, 3, 1, 32, 160)


def test_random_pick_draws_every_window_reproducibly() -> None:
    audio, video = _features()
    windows = [_split(1), _split(2)]
    dataset = ClipDataset(windows, torch.arange(5), audio, video, pick="random")
    singles = [ClipDataset(w, torch.arange(5), audio, video) for w in windows]

    def drawn(seed: int) -> list[int]:
        torch.manual_seed(seed)
        out = []
        for _ in range(40):
            video_item = dataset[0]["video"]
            out.append(next(w for w, s in enumerate(singles) if torch.equal(s[0]["video"], video_item)))
        return out

    first = drawn(0)
    assert set(first) == {0, 1} and drawn(0) == first and drawn(1) != first
    with pytest.raises(ValueError, match="same clips"):
        ClipDataset([_split(1), _split(2, n=4)], torch.arange(5), audio, video)


def test_multi_clip_logits_are_the_mean_over_windows() -> None:
    torch.manual_seed(0)
    model = create_model("mbt", 4, "tiny", head_init="xavier").eval()
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(3, 2, 1, 32, 160, generator=g)  # (B, W, 1, n_mels, L)
    video = torch.randn(3, 2, 3, 16, 32, 32, generator=g)
    a_p, v_p = torch.tensor([True, False, True]), torch.tensor([True, True, False])
    with torch.no_grad():
        out = forward_windows(model, audio, video, a_p, v_p)
        per_window = [forward_present(model, audio[:, w], video[:, w], a_p, v_p).logits for w in range(2)]
    torch.testing.assert_close(out.logits, torch.stack(per_window).mean(0), atol=1e-5, rtol=1e-5)
    assert out.rows.tolist() == [0, 1, 2]
    with torch.no_grad():  # a clip with neither modality is left out, and the rows still name the clips
        out = forward_windows(model, audio, video, torch.tensor([True, False, False]), torch.tensor([True, False, True]))
    assert out.rows.tolist() == [0, 2]


def _ramp_clip(write_mp4, path, seconds: int, offset: int = 0):
    """A clip whose frame i (8 fps) has every pixel at 4·i + offset: the decoded window tells where it started."""
    n = 8 * seconds
    frames = np.stack([np.full((32, 32, 3), min(255, 4 * i + offset), np.uint8) for i in range(n)])
    return write_mp4(path, frames, (0.1 * np.sin(np.arange(seconds * 16000) / 7)).astype(np.float32))


def test_datamodule_decodes_the_windows_each_split_asks_for(tmp_path, write_mp4) -> None:
    from fusionbench.config import DataConfig
    from fusionbench.data.datamodule import AVDataModule
    from fusionbench.evaluate.conditions import parse_condition

    for name in ("a", "b", "c"):
        _ramp_clip(write_mp4, tmp_path / f"{name}.mp4", 6)
    (tmp_path / "clips.csv").write_text("path,label,split\na.mp4,x,train\nb.mp4,x,val\nc.mp4,x,test\n")
    cfg = OmegaConf.structured(DataConfig)
    cfg.dataset, cfg.root, cfg.cache_dir, cfg.batch_size = "clips", str(tmp_path), str(tmp_path / "cache"), 2
    cfg.video.size, cfg.audio.target_length, cfg.train_windows = 32, 160, 2
    dm = AVDataModule(cfg, conditions=[parse_condition("audio_snr_0")], test_windows=4, decode_workers=1)
    dm.setup()
    first = {split: [float(w.frames[0, 0].float().mean()) for w in dm.windows[split]] for split in dm.windows}
    # 6-s trimmed clips, 2-s windows: val centred at 2 s (frame 16), train at 1 and 3 s, test at 0.5, 1.5, 2.5, 3.5 s
    assert first["val"] == pytest.approx([64.0], abs=4)
    assert first["train"] == pytest.approx([32.0, 96.0], abs=4)
    assert first["test"] == pytest.approx([16.0, 48.0, 80.0, 112.0], abs=4)
    assert sorted(p.name for p in dm.cache.dir.iterdir() if p.is_dir()) == sorted(
        ["train-w0of2", "train-w1of2", "val", "test-w0of4", "test-w1of4", "test-w2of4", "test-w3of4"])
    test = next(iter(dm.test_dataloader()[1]))  # a corrupted condition serves every window too
    assert test["audio"].shape[:2] == (1, 4) and test["video"].shape[:3] == (1, 4, 3)
    train = dm.dataset("train")
    assert train.pick == "random" and train[0]["video"].shape == (3, 16, 32, 32)
