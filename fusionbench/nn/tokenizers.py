"""Modality tokenizers shared by every fusion: audio patches and video tubelets, each with learned positional embeddings.

Audio input is a log-mel/fbank image (B, 1, n_mels, n_frames), mel on height, time on width. Video is (B, 3, T, H, W).
Token order is time-major for both modalities (all tokens of time step 0 first), so token t of a per-frame audio
tokenizer lines up with frame t of the video.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _grid(shape: tuple[int, ...], patch: tuple[int, ...], what: str) -> tuple[int, ...]:
    if len(shape) != len(patch) or any(s % p for s, p in zip(shape, patch)):
        raise ValueError(f"{what} shape {tuple(shape)} is not divisible by patch size {tuple(patch)}")
    return tuple(s // p for s, p in zip(shape, patch))


class AudioPatchEmbed(nn.Module):
    """Non-overlapping (p_f × p_t) patches of the spectrogram → (B, N_a, D), N_a = (n_mels/p_f)·(n_frames/p_t)."""

    def __init__(self, audio_shape: tuple[int, int], audio_patch: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.audio_shape = tuple(audio_shape)
        self.grid = _grid(self.audio_shape, tuple(audio_patch), "audio")  # (G_f, G_t)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(1, dim, kernel_size=tuple(audio_patch), stride=tuple(audio_patch))
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, audio: Tensor) -> Tensor:
        if tuple(audio.shape[1:]) != (1, *self.audio_shape):
            raise ValueError(f"audio must be (B, 1, {self.audio_shape[0]}, {self.audio_shape[1]}), got {tuple(audio.shape)}")
        x = self.proj(audio)  # (B, D, G_f, G_t)
        x = x.permute(0, 3, 2, 1).flatten(1, 2)  # (B, G_t·G_f, D), time-major
        return x + self.pos


class VideoTubeletEmbed(nn.Module):
    """Non-overlapping (p_t × p_h × p_w) tubelets → (B, N_v, D), N_v = (T/p_t)(H/p_h)(W/p_w)."""

    def __init__(self, video_shape: tuple[int, int, int], video_patch: tuple[int, int, int], dim: int) -> None:
        super().__init__()
        self.video_shape = tuple(video_shape)
        self.grid = _grid(self.video_shape, tuple(video_patch), "video")  # (G_t, G_h, G_w)
        self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        self.proj = nn.Conv3d(3, dim, kernel_size=tuple(video_patch), stride=tuple(video_patch))
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, video: Tensor) -> Tensor:
        if tuple(video.shape[1:]) != (3, *self.video_shape):
            raise ValueError(f"video must be (B, 3, {', '.join(map(str, self.video_shape))}), got {tuple(video.shape)}")
        x = self.proj(video)  # (B, D, G_t, G_h, G_w)
        x = x.flatten(2).transpose(1, 2)  # (B, G_t·G_h·G_w, D), time-major
        return x + self.pos


class AVTokenizer(nn.Module):
    """Both tokenizers; either input may be None (then its tokens are None)."""

    def __init__(
        self,
        dim: int,
        audio_shape: tuple[int, int],
        audio_patch: tuple[int, int],
        video_shape: tuple[int, int, int],
        video_patch: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.audio = AudioPatchEmbed(audio_shape, audio_patch, dim)
        self.video = VideoTubeletEmbed(video_shape, video_patch, dim)

    def forward(self, audio: Tensor | None, video: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        if audio is None and video is None:
            raise ValueError("at least one of audio or video must be given")
        a = self.audio(audio) if audio is not None else None  # (B, N_a, D)
        v = self.video(video) if video is not None else None  # (B, N_v, D)
        return a, v
