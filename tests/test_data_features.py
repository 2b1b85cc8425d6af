"""Audio fbank parity with a direct kaldi.fbank call, pad/crop, normalisation, SpecAugment, video normalisation."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from fusionbench._torchaudio import import_torchaudio
from fusionbench.config import AudioConfig, VideoConfig
from fusionbench.data.features import AudioFeatures, SpecAugment, VideoFeatures, single_thread


def _audio_cfg(**kw):
    cfg = OmegaConf.structured(AudioConfig)
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def _wave(seconds: float = 2.0, sr: int = 16000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(round(sr * seconds)) / sr
    return (0.3 * torch.sin(2 * torch.pi * 523 * t) + 0.05 * torch.randn(t.shape, generator=g) + 0.1).float()


def test_fbank_matches_a_direct_kaldi_call() -> None:
    cfg = _audio_cfg(num_mel_bins=64, frame_shift_ms=10.0, target_length=256, norm_mean=-4.27, norm_std=4.57,
                     norm_std_scale=2.0)
    wave = _wave()  # has a DC offset of 0.1: the recipe subtracts the mean first
    direct = import_torchaudio().compliance.kaldi.fbank(
        (wave - wave.mean()).unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=64, dither=0.0, frame_length=25.0, frame_shift=10.0,
    )  # (198, 64)
    assert direct.shape == (198, 64)
    expected = torch.nn.functional.pad(direct, (0, 0, 0, 256 - 198))  # zero-pad in time to 256 frames
    expected = ((expected - -4.27) / (2.0 * 4.57)).t().unsqueeze(0)  # (1, 64, 256)
    out = AudioFeatures(cfg)(wave)
    assert out.shape == (1, 64, 256)
    assert torch.equal(out, expected)


def test_default_geometry_and_crop() -> None:
    default = AudioFeatures(_audio_cfg())
    assert default(_wave()).shape == (1, 32, 160) and default.shape == (32, 160)
    assert default.fbank(_wave()).shape == (159, 32)  # 2 s at a 12.5 ms hop, snip_edges
    short = AudioFeatures(_audio_cfg(target_length=100))
    assert torch.equal(short.raw(_wave()), default.raw(_wave())[..., :100])  # cropped, not resampled


def test_raw_then_normalise_equals_call() -> None:
    features = AudioFeatures(_audio_cfg(norm_mean=-5.081, norm_std=4.4849))
    assert torch.equal(features.normalise(features.raw(_wave())), features(_wave()))


def test_spec_augment_masks_when_active_and_is_identity_when_off() -> None:
    spec = torch.randn(1, 32, 160) + 10
    off = SpecAugment(0, 0)
    assert not off.active and torch.equal(off(spec), spec)
    on = SpecAugment(freqm=8, timem=40)
    torch.manual_seed(0)
    masked = [on(spec.clone()) for _ in range(10)]
    assert any((m == 0).any() for m in masked)  # masks write zeros, which an input of mean 10 never holds
    assert all(((m == 0) | (m == spec)).all() for m in masked)  # nothing else changes


def test_video_features_layout_and_normalisation() -> None:
    frames = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    frames[..., 0] = 255  # pure red
    out = VideoFeatures(OmegaConf.structured(VideoConfig))(frames)  # mean 0.5, std 0.5
    assert out.shape == (3, 4, 8, 8) and out.dtype == torch.float32
    assert torch.all(out[0] == 1.0) and torch.all(out[1:] == -1.0)
    batched = VideoFeatures(OmegaConf.structured(VideoConfig))(frames.expand(2, -1, -1, -1, -1))
    assert batched.shape == (2, 3, 4, 8, 8)


def test_single_thread_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
