"""Modality tokenizers shared by every fusion: audio patches and video tubelets, each with learned positional embeddings.

Two options, shared by every fusion so that conditions stay identical (``model.patch_embed``, ``model.pos_init_std``):
``patch_embed="frozen"`` keeps the random patch projection fixed (MoCo v3's remedy for unstable ViT training, Chen,
Xie & He 2021; the positions still learn); ``pos_init_std`` is the positions' trunc-normal σ (ViT's 0.02 by default;
cut at ±2, timm's absolute bounds). fusionbench's use of them: the ``sync`` task (README: what makes it learnable).

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
    """Non-overlapping (p_f × p_t) patches of the spectrogram → (B, N_a, D), N_a = (n_mels/p_f)·(n_frames/p_t).

    The patch embedding is a linear map of each flattened patch (ViT's definition; equal to a stride-p convolution,
    and 2–3× faster than ``Conv2d``/``Conv3d`` backward on CPU at these sizes).
    """

    def __init__(self, audio_shape: tuple[int, int], audio_patch: tuple[int, int], dim: int,
                 pos_init_std: float = 0.02) -> None:
        super().__init__()
        self.audio_shape, self.patch = tuple(audio_shape), tuple(audio_patch)
        self.grid = _grid(self.audio_shape, self.patch, "audio")  # (G_f, G_t)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.proj = nn.Linear(self.patch[0] * self.patch[1], dim)
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=pos_init_std)

    def forward(self, audio: Tensor) -> Tensor:
        if tuple(audio.shape[1:]) != (1, *self.audio_shape):
            raise ValueError(f"audio must be (B, 1, {self.audio_shape[0]}, {self.audio_shape[1]}), got {tuple(audio.shape)}")
        (g_f, g_t), (p_f, p_t) = self.grid, self.patch
        x = audio.view(-1, g_f, p_f, g_t, p_t)  # (B, G_f, p_f, G_t, p_t)
        x = x.permute(0, 3, 1, 2, 4).reshape(-1, g_t * g_f, p_f * p_t)  # (B, N_a, p_f·p_t), time-major
        return self.proj(x) + self.pos  # (B, N_a, D)


class VideoTubeletEmbed(nn.Module):
    """Non-overlapping (p_t × p_h × p_w) tubelets → (B, N_v, D), N_v = (T/p_t)(H/p_h)(W/p_w); a linear map of each
    flattened tubelet, as ``AudioPatchEmbed``."""

    def __init__(self, video_shape: tuple[int, int, int], video_patch: tuple[int, int, int], dim: int,
                 pos_init_std: float = 0.02) -> None:
        super().__init__()
        self.video_shape, self.patch = tuple(video_shape), tuple(video_patch)
        self.grid = _grid(self.video_shape, self.patch, "video")  # (G_t, G_h, G_w)
        self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        self.proj = nn.Linear(3 * self.patch[0] * self.patch[1] * self.patch[2], dim)
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=pos_init_std)

    def forward(self, video: Tensor) -> Tensor:
        if tuple(video.shape[1:]) != (3, *self.video_shape):
            raise ValueError(f"video must be (B, 3, {', '.join(map(str, self.video_shape))}), got {tuple(video.shape)}")
        (g_t, g_h, g_w), (p_t, p_h, p_w) = self.grid, self.patch
        x = video.view(-1, 3, g_t, p_t, g_h, p_h, g_w, p_w)  # (B, C, G_t, p_t, G_h, p_h, G_w, p_w)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, G_t, G_h, G_w, C, p_t, p_h, p_w)
        x = x.reshape(-1, g_t * g_h * g_w, 3 * p_t * p_h * p_w)  # (B, N_v, C·p_t·p_h·p_w), time-major
        return self.proj(x) + self.pos  # (B, N_v, D)


PATCH_EMBEDS = ("learned", "frozen")


class AVTokenizer(nn.Module):
    """Both tokenizers; either input may be None (then its tokens are None)."""

    def __init__(
        self,
        dim: int,
        audio_shape: tuple[int, int],
        audio_patch: tuple[int, int],
        video_shape: tuple[int, int, int],
        video_patch: tuple[int, int, int],
        patch_embed: str = "learned",
        pos_init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if patch_embed not in PATCH_EMBEDS:
            raise ValueError(f"patch_embed={patch_embed!r} is not one of {', '.join(PATCH_EMBEDS)}")
        if not pos_init_std > 0:
            raise ValueError(f"pos_init_std={pos_init_std!r} must be > 0")
        self.audio = AudioPatchEmbed(audio_shape, audio_patch, dim, pos_init_std)
        self.video = VideoTubeletEmbed(video_shape, video_patch, dim, pos_init_std)
        if patch_embed == "frozen":  # the projections keep their random init; the optimiser never sees them
            for proj in (self.audio.proj, self.video.proj):
                proj.requires_grad_(False)

    def forward(self, audio: Tensor | None, video: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        if audio is None and video is None:
            raise ValueError("at least one of audio or video must be given")
        a = self.audio(audio) if audio is not None else None  # (B, N_a, D)
        v = self.video(video) if video is not None else None  # (B, N_v, D)
        return a, v
