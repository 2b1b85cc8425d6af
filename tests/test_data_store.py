"""The prepared store: a prepare SIGKILLed mid-way resumes to bit-identical arrays, float16 fbank, a split is read
only once complete, training reads it without decoding, and ``fusionbench data prepare`` prints progress and a
throughput line."""
from __future__ import annotations

import filecmp
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.config import DataConfig
from fusionbench.data.cache import FBANK_DTYPE, read_split
from fusionbench.data.datamodule import SPLITS, AVDataModule
from fusionbench.data.features import AudioFeatures
from fusionbench.data.store import PrepareProgress

FIELDS = ("index", "frames", "fbank", "has_audio", "has_video", "padded_frames", "padded_audio_s")

KILLED_PREPARE = """
import sys, time
from omegaconf import OmegaConf
import fusionbench.data.store as store
from fusionbench.data.datamodule import AVDataModule

real = store.decode_job
store.decode_job = lambda job: (time.sleep(0.15), real(job))[1]  # slow enough to be killed mid-way (forked workers too)
cfg = OmegaConf.load(sys.argv[1])
AVDataModule(cfg, decode_workers=2, chunk_clips=2, min_parallel=2).setup()
"""


@pytest.fixture(scope="module")
def clips_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generic clips.csv: 14 train clips with a corrupt file and a video-only mp4 among them, 3 val, 3 test."""
    from fusionbench.data.synthetic import write_mp4

    root = tmp_path_factory.mktemp("store_clips")
    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for i in range(20):
        frames = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
        write_mp4(root / f"c{i}.mp4", frames, (0.1 * rng.standard_normal(32000)).astype(np.float32), 8, 16000)
        rows.append(f"c{i}.mp4,{'cat' if i % 2 else 'dog'},{'val' if i >= 17 else 'test' if i >= 14 else 'train'}")
        if i == 4:
            (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
            rows.append("corrupt.mp4,cat,train")
        if i == 8:
            import av

            with av.open(str(root / "silent.mp4"), "w", format="mp4") as container:  # no audio stream
                stream = container.add_stream("libx264", rate=8)
                stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
                for t, rgb in enumerate(frames):
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts = t
                    container.mux(stream.encode(frame))
                container.mux(stream.encode(None))
            rows.append("silent.mp4,dog,train")
    (root / "clips.csv").write_text("\n".join(rows) + "\n")
    return root


def _cfg(root: Path, cache_dir: Path | str):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {
        "dataset": "clips", "root": str(root), "cache_dir": str(cache_dir), "on_error": "skip", "batch_size": 8})


def _equal_splits(a: AVDataModule, b: AVDataModule) -> None:
    for split in SPLITS:
        for name in FIELDS:
            x, y = getattr(a.data[split], name), getattr(b.data[split], name)
            assert x.dtype == y.dtype and torch.equal(x, y), (split, name)
        assert a.data[split].skipped == b.data[split].skipped
    assert torch.equal(a.data["test"].waveform, b.data["test"].waveform)


def test_a_killed_prepare_resumes_to_bit_identical_arrays(clips_root: Path, tmp_path: Path) -> None:
    reference = AVDataModule(_cfg(clips_root, tmp_path / "reference"), decode_workers=1)
    reference.setup()  # uninterrupted, serial, one chunk of 64
    assert {Path(p).name for p, _ in reference.skipped} == {"corrupt.mp4"}  # silent.mp4: kept, audio absent
    key_dir = tmp_path / "killed" / reference.cache.key
    (tmp_path / "cfg.yaml").write_text(OmegaConf.to_yaml(_cfg(clips_root, tmp_path / "killed")))
    process = subprocess.Popen([sys.executable, "-c", KILLED_PREPARE, str(tmp_path / "cfg.yaml")],
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = key_dir / "train.partial" / "chunks"
    deadline = time.monotonic() + 120
    try:
        while len(list(records.glob("*.json"))) < 2:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the prepare never recorded two chunks"
            time.sleep(0.005)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the prepare and its decoding workers, mid-split
        process.wait()
    assert not (key_dir / "train").exists() and read_split(key_dir / "train") is None  # incomplete: not readable
    recorded = len(list(records.glob("*.json")))
    assert 2 <= recorded < 8  # 16 train clips in chunks of 2

    resumed = AVDataModule(_cfg(clips_root, tmp_path / "killed"), decode_workers=2, chunk_clips=2, min_parallel=2)
    resumed.setup()
    stats = resumed.prepare_stats["train"]
    assert stats.resumed >= 2 * recorded and stats.decoded == 16 - stats.resumed
    assert resumed.decode_count == stats.decoded + 6 < reference.decode_count == 22
    _equal_splits(reference, resumed)
    for split in SPLITS:  # the files themselves, byte for byte
        for name in FIELDS:
            assert filecmp.cmp(reference.cache.path(split) / f"{name}.npy", key_dir / split / f"{name}.npy",
                               shallow=False), (split, name)
    assert sorted(p.name for p in key_dir.iterdir() if not p.name.startswith(".")) == [
        "meta.json", "test", "train", "val"]  # the partial folder is gone


def test_fbank_is_stored_float16_and_equals_the_float32_fbank_rounded(clips_root: Path, tmp_path: Path) -> None:
    module = AVDataModule(_cfg(clips_root, tmp_path / "cache"), decode_workers=1)
    module.setup()
    test = module.data["test"]
    assert np.load(module.cache.path("test") / "fbank.npy", mmap_mode="r").dtype == np.float16
    assert test.fbank.dtype == FBANK_DTYPE and module.data["train"].frames.dtype == torch.uint8
    exact = AudioFeatures(module.cfg.audio)  # the float32 front end
    for i in range(len(test)):
        assert torch.equal(test.fbank[i], exact.raw(test.waveform[i]).half())
    train = module.data["train"]
    silent = [module.clips[r].path.name for r in train.index.tolist()].index("silent.mp4")
    assert not train.has_audio[silent] and not train.fbank[silent].any()  # absent: zeros, not the fbank of silence


def test_training_reads_the_store_without_decoding(clips_root: Path, tmp_path: Path) -> None:
    first = AVDataModule(_cfg(clips_root, tmp_path / "cache"), decode_workers=1)
    first.setup()
    again = AVDataModule(_cfg(clips_root, tmp_path / "cache"), decode_workers=1)
    again.setup()
    assert again.decode_count == 0 and again.cache.hits == 3 and again.cache.misses == 0
    _equal_splits(first, again)
    batch = next(iter(again.train_dataloader()))
    assert batch["audio"].dtype == torch.float32 and batch["audio"].shape == (8, 1, 32, 160)


def test_cli_prepare_prints_a_throughput_line_and_training_then_decodes_nothing(
        clips_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fusionbench.cli import main

    overrides = ["data=clips", f"data.root={clips_root}", f"data.cache_dir={tmp_path / 'cache'}",
                 "data.on_error=skip", "eval.conditions=[av,audio_snr_0]"]
    assert main(["data", "prepare", *overrides, "--workers", "2"]) == 0
    out = capsys.readouterr().out
    for split, n, extra in (("train", 16, r" \(1 skipped\)"), ("val", 3, ""), ("test", 3, "")):
        assert re.search(rf"^\[data\] clips-\S+ {split}: {n} clips in \d+\.\d s \(\d+\.\d clips/s\){extra}$", out,
                         re.MULTILINE), (split, out)
    assert "[data] corrupted test splits: audio_snr_0 in " in out
    assert main(["data", "prepare", *overrides]) == 0
    again = capsys.readouterr().out
    assert "train: 15 clips (already prepared)" in again and "audio_snr_0 (already prepared)" in again
    module = AVDataModule(_cfg(clips_root, tmp_path / "cache"), decode_workers=1)
    module.setup()
    assert module.decode_count == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines() -> None:
    log = io.StringIO()
    progress = PrepareProgress(10, 4, "[data] prepare train", stream=log, every_s=0.0)
    for _ in range(6):
        progress.update(1)
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 6 and lines[0].startswith("[data] prepare train: 5/10 clips (50 %), ")
    assert lines[-1].startswith("[data] prepare train: 10/10 clips (100 %)") and "clips/s" in lines[-1]
    quiet = io.StringIO()
    slow = PrepareProgress(10, 0, "x", stream=quiet, every_s=3600.0)
    slow.update(5)
    assert quiet.getvalue() == ""  # not a terminal: a line only every every_s seconds
    tty = _Terminal()
    live = PrepareProgress(3, 0, "x", stream=tty, every_s=3600.0)
    live.update(1)
    live.close()
    assert tty.getvalue().startswith("\rx: 1/3 clips (33 %)") and tty.getvalue().endswith("\r\033[K")
