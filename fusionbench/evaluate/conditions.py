"""Test-time evaluation conditions: which modalities the model sees and how the inputs are corrupted.

Names are metric-safe (MLflow keeps ``[A-Za-z0-9_/. -]``) and appear as ``test/<condition>/<metric>``:

- ``av``, ``audio_only``, ``video_only``: clean inputs; a dropped modality is passed to the model as ``None``.
- ``audio_snr_<dB>``: white noise added to the waveform at that SNR (before the fbank), video clean.
- ``video_noise_<sigma>``: Gaussian pixel noise of std sigma (pixels in [0, 1]), audio clean.
- ``video_occlusion_<frac>``: a square covering ``frac`` of every frame's area at a random place per clip, filled
  with the training split's per-channel mean pixel (fusionbench's rule: a black square is far off the training
  distribution — after normalisation it is the most extreme input a model ever sees —, the mean is what a
  normalised model reads as "no signal"). The datamodule binds the mean (``Condition.with_fill``); a condition used
  without one fills with mid-grey (``UNBOUND_FILL``).
- ``video_occlusion_black_<frac>``: the same square, black (pixel 0): the classic, off-distribution variant.

Corruptions are deterministic: each clip's noise comes from a generator seeded by (condition, clip index).
``Condition.corrupt`` (one clip) is the reference; ``Condition.corrupt_frames`` corrupts the frames of a whole
split at once, bit-identical to it (the datamodule caches each corrupted test split, see ``data/datamodule.py``).
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from fusionbench.config import ConfigError

_CORRUPTION = re.compile(r"^(audio_snr|video_noise|video_occlusion_black|video_occlusion)_(-?\d+(?:\.\d+)?)$")
UNBOUND_FILL = (128, 128, 128)  # video_occlusion's fill where no training mean was bound (direct library use)
CLEAN = {"av": None, "audio_only": "video", "video_only": "audio"}  # condition → the modality it drops
# bump when a corruption's output changes: cached corrupted test sets are then rebuilt.
# 2: video_occlusion fills with the training mean (it was black).
CORRUPTION_VERSION = 2


@dataclass(frozen=True)
class Condition:
    name: str
    drop: str | None = None  # "audio" | "video" | None
    kind: str | None = None  # corruption kind, None for clean inputs
    level: float = 0.0
    fill: tuple[int, int, int] | None = None  # video_occlusion's fill pixel (uint8 RGB), bound by the datamodule

    def with_fill(self, mean: Sequence[float] | Tensor) -> "Condition":
        """This condition with ``video_occlusion``'s fill set to ``mean`` (per-channel pixel mean in [0, 1]),
        rounded to uint8; other conditions are returned unchanged."""
        if self.kind != "video_occlusion":
            return self
        values = [float(v) for v in (mean.tolist() if isinstance(mean, Tensor) else mean)]
        if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"{self.name}: the fill must be 3 channel means in [0, 1], got {values}")
        return replace(self, fill=tuple(int(round(v * 255)) for v in values))

    @property
    def fill_pixel(self) -> tuple[int, int, int]:
        """The uint8 RGB an occluding square is filled with: black for ``video_occlusion_black``, the bound mean
        (mid-grey when unbound) for ``video_occlusion``."""
        if self.kind == "video_occlusion_black":
            return (0, 0, 0)
        return self.fill if self.fill is not None else UNBOUND_FILL

    @property
    def corrupts(self) -> bool:
        return self.kind is not None

    @property
    def corrupted_modality(self) -> str | None:
        """The input a corrupting condition changes, "audio" or "video" (the other stays clean); None if clean."""
        if self.kind is None:
            return None
        return "audio" if self.kind == "audio_snr" else "video"

    def generator(self, clip_index: int) -> torch.Generator:
        """The generator of one clip's corruption, seeded by (condition name, clip index)."""
        return torch.Generator().manual_seed(zlib.crc32(f"{self.name}/{clip_index}".encode()))

    def corrupt(self, waveform: Tensor, frames: Tensor, clip_index: int) -> tuple[Tensor, Tensor]:
        """``waveform`` (S,) float; ``frames`` (T, H, W, 3) uint8 → corrupted copies of both."""
        if self.kind is None:
            return waveform, frames
        gen = self.generator(clip_index)
        if self.kind == "audio_snr":
            return add_noise_at_snr(waveform, self.level, gen), frames
        if self.kind == "video_noise":
            return waveform, gaussian_pixel_noise(frames, self.level, gen)
        return waveform, occlude(frames, self.level, gen, self.fill_pixel)

    def corrupt_frames(self, frames: Tensor, clip_indices: Sequence[int]) -> Tensor:
        """Frames of several clips ``(N, T, H, W, 3)`` uint8 → corrupted copies, vectorised over the clips
        (``frames`` itself for a condition that leaves video clean).

        Bit-identical to ``corrupt(…, frames[i], clip_indices[i])[1]`` for each i: the random draws are made per
        clip from the same generators, the element-wise arithmetic is the same.
        """
        if self.corrupted_modality != "video":
            return frames
        if frames.shape[0] != len(clip_indices):
            raise ValueError(f"{frames.shape[0]} clips but {len(clip_indices)} clip indices")
        if self.kind == "video_noise":
            noise = torch.empty(frames.shape, dtype=torch.float32)  # (N, T, H, W, 3)
            for i, clip_index in enumerate(clip_indices):
                noise[i] = torch.randn(frames.shape[1:], generator=self.generator(clip_index))
            return add_pixel_noise(frames, self.level, noise)
        n, _, h, w, _ = frames.shape
        boxes = torch.tensor([occlusion_box(h, w, self.level, self.generator(c)) for c in clip_indices],
                             dtype=torch.int64).reshape(n, 4)  # (N, 4): top, left, side_h, side_w
        top, left, side_h, side_w = boxes.unbind(1)
        rows, cols = torch.arange(h), torch.arange(w)
        in_rows = (rows >= top[:, None]) & (rows < (top + side_h)[:, None])  # (N, H)
        in_cols = (cols >= left[:, None]) & (cols < (left + side_w)[:, None])  # (N, W)
        box = in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)
        fill = torch.tensor(self.fill_pixel, dtype=torch.uint8)  # (3,)
        return torch.where(box[:, None, :, :, None], fill, frames)  # (N, T, H, W, 3)


def parse_condition(name: str) -> Condition:
    if name in CLEAN:
        return Condition(name, drop=CLEAN[name])
    match = _CORRUPTION.match(name)
    if not match:
        raise ConfigError(
            f"unknown eval condition {name!r}; valid: av, audio_only, video_only, audio_snr_<dB>, "
            "video_noise_<sigma>, video_occlusion_<fraction>, video_occlusion_black_<fraction>"
        )
    kind, level = match.group(1), float(match.group(2))
    if kind.startswith("video_occlusion") and not 0 <= level <= 1:
        raise ConfigError(f"{name}: occlusion fraction must be in [0, 1]")
    if kind == "video_noise" and level < 0:
        raise ConfigError(f"{name}: noise sigma must be >= 0")
    return Condition(name, kind=kind, level=level)


def add_noise_at_snr(waveform: Tensor, snr_db: float, gen: torch.Generator) -> Tensor:
    """x + n with n white Gaussian scaled so that 10·log10(P_x / P_n) = snr_db."""
    noise = torch.randn(waveform.shape, generator=gen, dtype=torch.float32)
    signal_power = waveform.float().pow(2).mean().clamp_min(1e-10)
    noise = noise * torch.sqrt(signal_power / (10 ** (snr_db / 10)) / noise.pow(2).mean())
    return (waveform.float() + noise).to(waveform.dtype)


def gaussian_pixel_noise(frames: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    return add_pixel_noise(frames, sigma, torch.randn(frames.shape, generator=gen))


def add_pixel_noise(frames: Tensor, sigma: float, noise: Tensor) -> Tensor:
    """uint8 frames + sigma · noise (pixels in [0, 1]), clamped and rounded back to uint8."""
    noisy = frames.float() / 255 + sigma * noise
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def occlude(frames: Tensor, fraction: float, gen: torch.Generator, fill: Sequence[int] = (0, 0, 0)) -> Tensor:
    """A square of area ``fraction`` of the frame filled with the uint8 RGB ``fill``, at the same random place in
    every frame of the clip."""
    _, h, w, _ = frames.shape
    top, left, side_h, side_w = occlusion_box(h, w, fraction, gen)
    out = frames.clone()
    out[:, top : top + side_h, left : left + side_w] = torch.tensor(list(fill), dtype=torch.uint8)  # (3,)
    return out


def occlusion_box(h: int, w: int, fraction: float, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, side_h, side_w) of the occluding square in an h × w frame; draws top, then left, from ``gen``."""
    side_h, side_w = round(h * math.sqrt(fraction)), round(w * math.sqrt(fraction))
    top = int(torch.randint(0, h - side_h + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - side_w + 1, (1,), generator=gen))
    return top, left, side_h, side_w
