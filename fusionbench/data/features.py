"""Model inputs from decoded media: the AST/CAV-MAE Kaldi fbank for audio, normalised float clips for video.

Audio (reference/methods.md §5): subtract the waveform's mean, ``torchaudio.compliance.kaldi.fbank(htk_compat=True,
use_energy=False, window_type="hanning", dither=0.0, …)`` with the config's mel bins, frame length/shift and sample
rate, zero-pad or crop the frames to ``target_length`` (AST pads with 0 *before* normalising), normalise
``(x - norm_mean) / (norm_std_scale · norm_std)`` and lay it out as (1, n_mels, target_length): mel on height,
time on width. ``norm_mean`` / ``norm_div`` are floats, or (1, n_mels, target_length) tensors for the per-feature
normalisation (``data.norm_by=feature``). ``AudioFeatures.raw`` stops before the normalisation (what the cache stores);
``AudioFeatures.normalise`` finishes it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from fusionbench._torchaudio import import_torchaudio

torchaudio = import_torchaudio()


@contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny per-clip torch ops on one intra-op thread (fusionbench's choice).

    A 2 s fbank costs ≈1.3 ms on one thread; with 2 threads on a loaded 2-core machine it took 18–90 ms (OpenMP
    oversubscription). A no-op inside DataLoader workers, which already run single-threaded.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class AudioFeatures:
    """waveform (S,) float → normalised Kaldi fbank (1, n_mels, target_length)."""

    def __init__(self, audio_cfg: Any) -> None:
        self.sample_rate = int(audio_cfg.sample_rate)
        self.num_mel_bins = int(audio_cfg.num_mel_bins)
        self.frame_length_ms = float(audio_cfg.frame_length_ms)
        self.frame_shift_ms = float(audio_cfg.frame_shift_ms)
        self.target_length = int(audio_cfg.target_length)
        self.norm_mean = float(audio_cfg.norm_mean)
        self.norm_std_scale = float(audio_cfg.norm_std_scale)
        self.norm_div = self.norm_std_scale * float(audio_cfg.norm_std)

    @property
    def shape(self) -> tuple[int, int]:
        return self.num_mel_bins, self.target_length

    def fbank(self, waveform: Tensor) -> Tensor:
        """The Kaldi fbank of a mean-subtracted waveform (S,) → (frames, n_mels), before pad/crop."""
        wave = torch.as_tensor(waveform, dtype=torch.float32).reshape(1, -1)  # (1, S)
        wave = wave - wave.mean()
        with single_thread():
            return torchaudio.compliance.kaldi.fbank(
                wave,
                htk_compat=True,
                sample_frequency=self.sample_rate,
                use_energy=False,
                window_type="hanning",
                num_mel_bins=self.num_mel_bins,
                dither=0.0,
                frame_length=self.frame_length_ms,
                frame_shift=self.frame_shift_ms,
            )  # (frames, n_mels)

    def raw(self, waveform: Tensor) -> Tensor:
        """Un-normalised fbank, zero-padded / cropped in time → (1, n_mels, target_length)."""
        fb = self.fbank(waveform)  # (frames, n_mels)
        n = fb.shape[0]
        if n < self.target_length:
            fb = torch.nn.functional.pad(fb, (0, 0, 0, self.target_length - n))  # zeros at the end, as AST
        else:
            fb = fb[: self.target_length]
        return fb.t().unsqueeze(0).contiguous()  # (1, n_mels, target_length)

    def normalise(self, raw: Tensor) -> Tensor:
        return (raw.float() - self.norm_mean) / self.norm_div

    def __call__(self, waveform: Tensor) -> Tensor:
        return self.normalise(self.raw(waveform))  # (1, n_mels, target_length)


class SpecAugment(nn.Module):
    """One frequency mask (width < ``freqm``) and one time mask (width < ``timem``) on (…, n_mels, time), as AST.

    Randomness comes from torch's global RNG (seeded per DataLoader worker by Lightning). A width of 0 disables
    that mask; apply it to training batches only.
    """

    def __init__(self, freqm: int = 0, timem: int = 0) -> None:
        super().__init__()
        self.freq = torchaudio.transforms.FrequencyMasking(freqm) if freqm > 0 else None
        self.time = torchaudio.transforms.TimeMasking(timem) if timem > 0 else None

    @property
    def active(self) -> bool:
        return self.freq is not None or self.time is not None

    def forward(self, spec: Tensor) -> Tensor:
        if self.freq is not None:
            spec = self.freq(spec)
        if self.time is not None:
            spec = self.time(spec)
        return spec


class VideoFeatures:
    """uint8 frames (…, T, H, W, 3) → float (…, 3, T, H, W): ``(x / 255 - mean) / std`` per channel (``mean`` /
    ``std`` (3,)), or per feature (pixel × channel: (3, T, H, W), ``data.norm_by=feature``).

    Moved to channels-first while still uint8 (a quarter of the bytes of the float copy: 2× faster than permuting
    and casting in one op), cast, then ``x · (1 / (255 · std)) - mean / std`` in place (2× faster than normalising
    the permuted view; equal to the formula within float32 rounding).
    """

    def __init__(self, video_cfg: Any) -> None:
        self.mean = torch.tensor([float(m) for m in video_cfg.mean])  # (3,), or (3, T, H, W) per feature
        self.std = torch.tensor([float(s) for s in video_cfg.std])  # (3,), or (3, T, H, W) per feature

    @property
    def channel_mean(self) -> Tensor:
        """The per-channel mean pixel (3,) (of the per-feature means under ``data.norm_by=feature``)."""
        return self.mean if self.mean.dim() == 1 else self.mean.mean((1, 2, 3))

    def __call__(self, frames: Tensor) -> Tensor:
        x = torch.as_tensor(frames)
        if x.dtype != torch.uint8 or x.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (..., T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
        y = x.movedim(-1, -4).contiguous().float()  # (..., 3, T, H, W): channels first, then float
        view = (3, 1, 1, 1) if self.std.dim() == 1 else self.std.shape  # per channel, or per feature (3, T, H, W)
        return y.mul_((1.0 / (255.0 * self.std)).view(view)).sub_((self.mean / self.std).view(view))
