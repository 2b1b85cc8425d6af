"""data.norm_by=feature: every fbank bin × frame and every pixel × channel standardised by its own training
statistics (numpy reference), applied to every split, identical on the batched and per-item paths; config checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from fusionbench.config import ConfigError, load_config
from fusionbench.data.datamodule import FEATURE_STD_FLOOR, AVDataModule


@pytest.fixture(scope="module")
def dm(synth_cfg_at, tmp_path_factory: pytest.TempPathFactory) -> AVDataModule:
    module = AVDataModule(synth_cfg_at(tmp_path_factory.mktemp("cache"), norm_by="feature"), seed=0, decode_workers=1)
    module.setup()
    return module


def reference(train: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``other`` standardised per feature by ``train``'s statistics (N, ...) in float64 numpy: mean, std (ddof 1)
    floored at FEATURE_STD_FLOOR × the std of all of train's values."""
    std = np.maximum(train.std(0, ddof=1), FEATURE_STD_FLOOR * train.std())
    return (other - train.mean(0)) / std


def stacked(dm: AVDataModule, split: str) -> dict[str, torch.Tensor]:
    dataset = dm.dataset(split)
    return default_collate([dataset[i] for i in range(len(dataset))])


@pytest.mark.parametrize("split", ["train", "test"])
def test_audio_is_standardised_per_fbank_bin_and_frame_by_the_training_split(dm: AVDataModule, split: str) -> None:
    train = dm.data["train"].fbank.double().numpy()  # (N, 1, n_mels, L), as stored
    want = reference(train, dm.data[split].fbank.double().numpy())
    np.testing.assert_allclose(stacked(dm, split)["audio"].numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("split", ["train", "test"])
def test_video_is_standardised_per_pixel_and_channel_by_the_training_split(dm: AVDataModule, split: str) -> None:
    train = dm.data["train"].frames.double().numpy() / 255  # (N, T, H, W, 3)
    want = reference(train, dm.data[split].frames.double().numpy() / 255)  # floor: one channel-pooled std here
    floors = [FEATURE_STD_FLOOR * train[..., c].std() for c in range(3)]
    assert all(train.std(0, ddof=1)[..., c].min() > f for c, f in enumerate(floors))  # no floor binds on this set
    got = stacked(dm, split)["video"].numpy()  # (N, 3, T, H, W)
    np.testing.assert_allclose(got, np.moveaxis(want, -1, 1), rtol=1e-4, atol=1e-4)


def test_the_training_split_has_no_component_common_to_every_clip(dm: AVDataModule) -> None:
    """What the option is for: per feature, the mean clip is removed (per channel it is not, on this set)."""
    batch = stacked(dm, "train")
    for x in (batch["audio"], batch["video"]):
        assert x.double().mean(0).abs().max() < 1e-4
    channel = AVDataModule(dm.cfg.copy(), seed=0, decode_workers=1)
    channel.cfg.norm_by = "channel"
    channel.setup()
    assert stacked(channel, "train")["video"].double().mean(0).abs().max() > 0.5


def test_batched_fetch_is_bit_identical_to_per_item(dm: AVDataModule) -> None:
    dataset = dm.dataset("test")
    rows = [2, 0, 1]
    batched, items = dataset.__getitems__(rows), default_collate([dataset[i] for i in rows])
    for key in items:
        assert torch.equal(batched[key], items[key]), key


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="data.norm_by=.pixel. is not one of channel, feature"):
        load_config(overrides=["data.norm_by=pixel"])
    with pytest.raises(ConfigError, match="data.norm_stats=train"):
        load_config(overrides=["data.norm_by=feature", "data.norm_stats=config"])
    load_config(overrides=["data.norm_by=feature"])
