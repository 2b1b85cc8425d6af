"""video_occlusion fills its square with the training split's mean pixel (not black); video_occlusion_black is
black; both are bit-identical between the per-clip and the whole-split paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusionbench.data.datamodule import AVDataModule
from fusionbench.evaluate.conditions import CORRUPTION_VERSION, UNBOUND_FILL, parse_condition


def numpy_train_mean(dm: AVDataModule) -> np.ndarray:
    """The training split's per-channel mean pixel, uint8-rounded, computed independently with numpy."""
    frames = dm.data["train"].frames.numpy().astype(np.float64)  # (N, T, H, W, 3)
    return np.round(frames.reshape(-1, 3).mean(0)).astype(np.uint8)  # (3,)


@pytest.mark.parametrize("norm_stats,norm_by", [("train", "channel"), ("config", "channel"), ("train", "feature")])
def test_full_occlusion_fills_every_pixel_with_the_training_mean(synth_cfg, norm_stats: str, norm_by: str) -> None:
    mean_fill, black = parse_condition("video_occlusion_1"), parse_condition("video_occlusion_black_1")
    dm = AVDataModule(synth_cfg(norm_stats=norm_stats, norm_by=norm_by), conditions=[mean_fill, black],
                      decode_workers=1)
    dm.setup()
    want = numpy_train_mean(dm)
    assert not np.array_equal(want, np.zeros(3, np.uint8))  # the test means something: the mean is not black,
    assert tuple(want) != UNBOUND_FILL  # nor the mid-grey an unbound condition uses
    occluded = dm.corrupted("test", mean_fill).frames.numpy()  # (N, T, H, W, 3)
    assert (occluded == want).all(), (np.unique(occluded.reshape(-1, 3), axis=0)[:4], want)
    assert (dm.corrupted("test", black).frames.numpy() == 0).all()
    # the per-clip reference path (ClipDataset with the same condition) reads the same mean
    item = dm.dataset("test", mean_fill)[0]["video"]
    from fusionbench.data.datamodule import ClipDataset

    ref = ClipDataset(dm.data["test"], dm.labels("test"), dm.audio_features, dm.video_features,
                      condition=mean_fill.with_fill(dm.occlusion_fill()))[0]["video"]
    assert torch.equal(item, ref)


def test_partial_occlusion_keeps_the_rest_and_both_paths_agree() -> None:
    frames = torch.randint(0, 256, (4, 3, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    cond = parse_condition("video_occlusion_0.25").with_fill([0.2, 0.4, 0.6])
    assert cond.fill_pixel == (51, 102, 153)
    batch = cond.corrupt_frames(frames, [0, 1, 2, 3])
    for i in range(4):
        one = cond.corrupt(torch.zeros(3), frames[i], i)[1]
        assert torch.equal(batch[i], one)
        changed = (one != frames[i]).any(-1)  # (T, H, W)
        assert changed.float().mean() <= 0.25 + 1e-6  # a 4×4 square of 8×8: a quarter at most
        assert (one[changed] == torch.tensor([51, 102, 153], dtype=torch.uint8)).all()
    black = parse_condition("video_occlusion_black_0.25")
    assert black.fill_pixel == (0, 0, 0) and black.with_fill([0.5] * 3) is black
    assert CORRUPTION_VERSION >= 2  # cached (black-filled) corrupted sets of version 1 are rebuilt
