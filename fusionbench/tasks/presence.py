"""Per-clip missing modalities: a batch is split by which modalities each clip has, never filled with silence.

A batch may carry ``audio_present`` / ``video_present`` (bool (B,), from ``data.missing_modality=absent``). The
clips that have both go through the fusion as usual; those with one go through the fusion's own unimodal path
(``model(audio=None, video=...)``: each fusion documents it); the absent modality's tensor (zeros in the batch) is
never read. The logits come back in batch order. A clip with neither modality has no input: it is left out (and
counted by the caller), never given a guess.

Loss (fusionbench's rule): each clip's loss is the model's own rule (``model.loss``) on the modalities it has, and
the batch loss is the mean over the clips, i.e. the per-group losses weighted by the group sizes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fusionbench.nn.model import FusionModel, FusionOutput

GROUPS = ((True, True), (True, False), (False, True))  # (has audio, has video) of each group, in forward order


@dataclass
class PresentOutput:
    """``logits`` (B_kept, C) for the clips with at least one modality, in batch order; ``rows`` (B_kept,) their rows
    in the batch (None: every row, one group with both modalities); ``groups``: (rows, the model's output) each."""

    logits: Tensor
    rows: Tensor | None
    groups: list[tuple[Tensor | None, FusionOutput]]

    def kept(self, x: Tensor) -> Tensor:
        """``x`` (B, ...) restricted to the rows that have logits, in their order."""
        return x if self.rows is None else x[self.rows]


def _mask(present: Tensor | None, given: Tensor | None, batch: int, device: torch.device) -> Tensor:
    if given is None:  # the modality is dropped for the whole batch (e.g. the audio_only condition)
        return torch.zeros(batch, dtype=torch.bool, device=device)
    if present is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    return present.to(device=device, dtype=torch.bool)


def forward_present(
    model: FusionModel,
    audio: Tensor | None,
    video: Tensor | None,
    audio_present: Tensor | None = None,
    video_present: Tensor | None = None,
) -> PresentOutput:
    """Run ``model`` on each group of clips with the same modalities present (see the module docstring).

    ``audio`` (B, 1, n_mels, L) or None (absent for every clip), ``video`` (B, 3, T, H, W) or None; masks bool (B,),
    None = present for every clip. A batch where every clip has both is one ordinary call (no indexing).
    """
    given = audio if audio is not None else video
    if given is None:
        raise ValueError("forward_present needs audio or video")
    batch, device = given.shape[0], given.device
    has_audio = _mask(audio_present, audio, batch, device)  # (B,)
    has_video = _mask(video_present, video, batch, device)  # (B,)
    if bool(has_audio.all()) and bool(has_video.all()):
        out = model(audio=audio, video=video)
        return PresentOutput(out.logits, None, [(None, out)])
    groups, rows_seen, logits_seen = [], [], []
    for with_audio, with_video in GROUPS:
        rows = ((has_audio == with_audio) & (has_video == with_video)).nonzero().squeeze(1)  # (B_g,)
        if not rows.numel():
            continue
        out = model(audio=audio[rows] if with_audio else None, video=video[rows] if with_video else None)
        groups.append((rows, out))
        rows_seen.append(rows)
        logits_seen.append(out.logits)  # (B_g, C)
    if not groups:
        return PresentOutput(given.new_zeros(0, 0), given.new_zeros(0, dtype=torch.long), [])
    rows = torch.cat(rows_seen)  # (B_kept,)
    order = rows.argsort()
    return PresentOutput(torch.cat(logits_seen)[order], rows[order], groups)


def forward_windows(
    model: FusionModel,
    audio: Tensor | None,
    video: Tensor | None,
    audio_present: Tensor | None = None,
    video_present: Tensor | None = None,
) -> PresentOutput:
    """Multi-clip evaluation: ``audio`` (B, W, 1, n_mels, L) / ``video`` (B, W, 3, T, H, W), W windows of each clip;
    ``forward_present`` over the B·W windows, then each clip's logits are the mean of its windows' logits (the
    papers' multi-view test protocol). ``groups`` hold the per-window outputs."""
    given = audio if audio is not None else video
    if given is None:
        raise ValueError("forward_windows needs audio or video")
    b, w = given.shape[:2]
    flat = [None if x is None else x.flatten(0, 1) for x in (audio, video)]  # (B·W, ...)
    masks = [None if m is None else m.repeat_interleave(w) for m in (audio_present, video_present)]  # (B·W,)
    out = forward_present(model, *flat, *masks)
    logits = out.logits.view(-1, w, out.logits.shape[-1]).mean(1)  # (B_kept, C): a clip's windows are adjacent
    rows = None if out.rows is None else out.rows.view(-1, w)[:, 0] // w  # (B_kept,)
    return PresentOutput(logits, rows, out.groups)


def present_loss(
    model: FusionModel, out: PresentOutput, target: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Mean over the kept clips of each clip's loss by the model's rule: Σ_g n_g · loss_g / Σ_g n_g."""
    if out.rows is None:
        return model.loss(out.groups[0][1], target, criterion)
    total = sum(model.loss(group, target[rows], criterion) * rows.numel() for rows, group in out.groups)
    return total / out.rows.numel()
