"""Modality dropout (``train.modality_dropout=p``): training clips lose one modality, through the fusion's own
unimodal path.

Rule (fusionbench's): each training clip that has both modalities is, with probability p, given one modality only —
audio or video with equal probability, drawn independently per clip. The dropped modality is marked absent in the
batch (``audio_present`` / ``video_present`` False), so ``tasks/presence.py`` routes the clip through the fusion's
documented unimodal path (``model(audio=None, video=...)``); the tensor is never zeroed and never read. A clip that
already lacks a modality is left as it is (a clip never loses both). Validation and test batches are not touched.

The draws come from a generator seeded by (run seed, rank, global step, batch index), not the global RNG, so they do
not shift any other random stream (stochastic depth, the loader) and a resumed run draws what the uninterrupted one
drew. Off (p = 0) by default.
"""
from __future__ import annotations

import torch
from torch import Tensor


def drop_generator(seed: int, rank: int, step: int, batch_idx: int) -> torch.Generator:
    """A CPU generator for one training batch, a function of (seed, rank, step, batch index) only."""
    return torch.Generator().manual_seed(hash((int(seed), int(rank), int(step), int(batch_idx))) & (2**63 - 1))


def drop_modalities(
    audio_present: Tensor, video_present: Tensor, p: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """New presence masks (bool (B,) each): every clip with both modalities drops one with probability ``p``
    (audio or video, 50/50). The inputs are not modified."""
    batch = audio_present.shape[0]
    dropped = torch.rand(batch, generator=generator) < p  # (B,) on CPU
    drop_audio = torch.rand(batch, generator=generator) < 0.5  # (B,): which one, for a dropped clip
    both = (audio_present & video_present).cpu()  # (B,)
    dropped &= both
    audio = audio_present.cpu() & ~(dropped & drop_audio)
    video = video_present.cpu() & ~(dropped & ~drop_audio)
    return audio.to(audio_present.device), video.to(video_present.device)


def apply_modality_dropout(batch: dict, p: float, generator: torch.Generator) -> dict:
    """``batch`` with its presence masks redrawn by ``drop_modalities`` (a shallow copy; tensors are shared).

    A batch without masks has both modalities for every clip."""
    if p <= 0:
        return batch
    n = batch["label"].shape[0]
    device = batch["audio"].device
    audio = batch.get("audio_present")
    video = batch.get("video_present")
    audio = torch.ones(n, dtype=torch.bool, device=device) if audio is None else audio.bool()
    video = torch.ones(n, dtype=torch.bool, device=device) if video is None else video.bool()
    audio, video = drop_modalities(audio, video, p, generator)
    return {**batch, "audio_present": audio, "video_present": video}
