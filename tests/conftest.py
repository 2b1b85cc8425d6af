"""Shared test fixtures: small, data-only (configs and tiny media sets written with PyAV)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from fusionbench.config import DataConfig

TINY_SYNTH_CLIPS = 40  # train 28, val 6, test 6


@pytest.fixture(scope="session")
def tiny_synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic ``joint`` set of 40 real mp4 clips, generated once per session by the datamodule itself."""
    from fusionbench.data.datamodule import AVDataModule

    root = tmp_path_factory.mktemp("synth")
    dm = AVDataModule(_synth_cfg(root, cache_dir=""), decode_workers=2)
    dm.prepare_data()
    assert dm.manifest_path.is_file()
    return root


@pytest.fixture(scope="session")
def tiny_synth_manifest(tiny_synth_root: Path) -> Path:
    """The clips.csv of ``tiny_synth_root``'s default set (other tests may generate variants beside it)."""
    from fusionbench.data.datasets.synth import set_dir_for

    return set_dir_for(_synth_cfg(tiny_synth_root, cache_dir="")) / "clips.csv"


def _synth_cfg(root: Path, cache_dir: str | Path, **overrides) -> DictConfig:
    cfg = OmegaConf.structured(DataConfig)
    cfg.root = str(root)
    cfg.cache_dir = str(cache_dir)
    cfg.synth.num_clips = TINY_SYNTH_CLIPS
    cfg.batch_size = 8
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.fixture(scope="session")
def synth_cfg_at(tiny_synth_root: Path) -> Callable[..., DictConfig]:
    """``synth_cfg_at(cache_dir, **dotted_overrides)`` → a data config on the tiny synthetic set."""

    def make(cache_dir: str | Path, **overrides) -> DictConfig:
        return _synth_cfg(tiny_synth_root, cache_dir, **overrides)

    return make


@pytest.fixture
def synth_cfg(synth_cfg_at, tmp_path: Path) -> Callable[..., DictConfig]:
    """``synth_cfg(**dotted_overrides)`` → a data config on the tiny synthetic set with a fresh cache dir."""

    def make(**overrides) -> DictConfig:
        return synth_cfg_at(overrides.pop("cache_dir", tmp_path / "cache"), **overrides)

    return make


@pytest.fixture
def write_mp4() -> Callable[..., Path]:
    """``write_mp4(path, frames uint8 (T, H, W, 3), waveform float32 (S,) | None, fps=8, sample_rate=16000)``.

    H.264 video (+ AAC audio when a waveform is given) in one mp4, as the synthetic generator writes them.
    """
    import av

    from fusionbench.data.synthetic import write_mp4 as write_av

    def write(path: Path, frames: np.ndarray, waveform: np.ndarray | None = None, fps: float = 8,
              sample_rate: int = 16000) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if waveform is not None:
            write_av(path, frames, waveform, fps, sample_rate)
            return path
        with av.open(str(path), "w", format="mp4") as container:  # video only
            stream = container.add_stream("libx264", rate=int(fps))
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return path

    return write
