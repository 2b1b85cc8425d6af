"""``ClipDataset``: the items of one decoded split (normalised features, labels, manifest rows), and the collate.

A batch (a dict): ``audio`` float32 (B, 1, n_mels, target_length), ``video`` float32 (B, 3, T, H, W), ``label``
int64 (B,) or float32 (B, C) multi-hot, ``index`` int64 (B,) = the clip's manifest row, ``audio_present`` /
``video_present`` bool (B,): whether the clip has that modality (``data.missing_modality=absent`` keeps clips without
one; their tensor there is a placeholder that the task never gives the model: ``tasks/presence.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from fusionbench.data.cache import DecodedSplit
from fusionbench.data.features import AudioFeatures, SpecAugment, VideoFeatures, single_thread
from fusionbench.evaluate.conditions import Condition


class ClipDataset(Dataset):
    """Items of one decoded split, optionally corrupted by one test condition.

    With ``condition``, each item is corrupted on the fly and its fbank recomputed: the per-clip reference path.
    The datamodule's test loaders instead serve precomputed corrupted splits (``corrupt_split``) with no condition.

    Several windows of each clip: ``data`` a sequence of decoded splits of the same clips, one per window
    (``data/windows.py``). ``pick="stack"`` (test: multi-clip evaluation) gives every window, ``audio``
    (W, 1, n_mels, L) and ``video`` (W, 3, T, H, W) per item; ``pick="random"`` (training) gives one window drawn
    uniformly per item and epoch from torch's global generator (as SpecAugment; seeded by ``seed_everything``).
    """

    def __init__(
        self,
        data: DecodedSplit | Sequence[DecodedSplit],
        labels: Tensor,
        audio: AudioFeatures,
        video: VideoFeatures,
        augment: SpecAugment | None = None,
        condition: Condition | None = None,
        pick: str = "stack",
    ) -> None:
        windows = [data] if isinstance(data, DecodedSplit) else list(data)
        if not windows or any(not torch.equal(w.index, windows[0].index) for w in windows[1:]):
            raise ValueError("the windows of a split must hold the same clips in the same order")
        if pick not in ("stack", "random"):
            raise ValueError(f"pick={pick!r} must be 'stack' or 'random'")
        if condition is not None and condition.corrupts and any(w.waveform is None for w in windows):
            raise ValueError(f"condition {condition.name} needs waveforms, which this split does not store")
        self.windows, self.pick, self.stacked = windows, pick, len(windows) > 1 and pick == "stack"
        self.data, self.labels = windows[0], labels
        self.audio_present = self.data.has_audio.bool()  # (N,): a file's streams are the same in every window
        self.video_present = self.data.has_video.bool()
        self.audio, self.video = audio, video
        self.augment = augment if augment is not None and augment.active else None
        self.condition = condition if condition is not None and condition.corrupts else None
        if self.condition is not None and self.condition.kind == "video_occlusion" and self.condition.fill is None:
            self.condition = self.condition.with_fill(video.channel_mean)  # the normalisation's mean: the training mean

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Tensor | int]:
        with single_thread():  # per-clip ops on small tensors: threads only add overhead (features.single_thread)
            return self._item(i)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor] | list[dict[str, Tensor | int]]:
        """A whole batch at once (the DataLoader's batched fetch): one vectorised normalisation per modality, the
        same element-wise arithmetic as ``__getitem__`` (bit-identical). SpecAugment then masks each clip of the
        batch in item order, drawing from the global RNG as the per-item path does (bit-identical under one seed).
        Items that need other per-clip work (an on-the-fly condition, a random window) are fetched one by one;
        ``collate`` accepts both forms."""
        if self.condition is not None or (len(self.windows) > 1 and not self.stacked) or (
                self.augment is not None and self.stacked):
            return [self[i] for i in indices]
        rows = torch.as_tensor(indices, dtype=torch.int64)
        # index_select, not ``x[rows]``: advanced indexing of a (N, T, H, W, 3) tensor is ~25× slower here
        take = lambda x: x.index_select(0, rows)  # noqa: E731
        with single_thread():
            audio = [self.audio.normalise(take(w.fbank)) for w in self.windows]  # W × (B, 1, n_mels, L)
            if self.augment is not None:  # one window here (the stacked case went per item)
                for j in range(len(rows)):
                    audio[0][j] = self.augment(audio[0][j])  # (1, n_mels, L), this clip's own masks
            video = [self.video(take(w.frames)) for w in self.windows]  # W × (B, 3, T, H, W)
        audio, video = (torch.stack(audio, 1), torch.stack(video, 1)) if self.stacked else (audio[0], video[0])
        return {"audio": audio, "video": video, "label": take(self.labels), "index": take(self.data.index),
                "audio_present": take(self.audio_present), "video_present": take(self.video_present)}

    def _window(self, data: DecodedSplit, i: int, index: int) -> tuple[Tensor, Tensor]:
        """(audio (1, n_mels, L), video (3, T, H, W)) of clip ``i`` in one window's split."""
        frames = data.frames[i]  # (T, H, W, 3) uint8
        if self.condition is not None:
            waveform, frames = self.condition.corrupt(data.waveform[i], frames, index)  # (S,), (T, H, W, 3)
            audio = self.audio(waveform)  # (1, n_mels, L), recomputed from the corrupted waveform
        else:
            audio = self.audio.normalise(data.fbank[i])  # (1, n_mels, L)
        if self.augment is not None:
            audio = self.augment(audio)
        return audio, self.video(frames)

    def _item(self, i: int) -> dict[str, Tensor | int]:
        index = int(self.data.index[i])
        if self.stacked:
            pairs = [self._window(w, i, index) for w in self.windows]
            audio, video = torch.stack([a for a, _ in pairs]), torch.stack([v for _, v in pairs])  # (W, ...) each
        else:
            w = int(torch.randint(len(self.windows), ())) if len(self.windows) > 1 else 0
            audio, video = self._window(self.windows[w], i, index)
        return {"audio": audio, "video": video, "label": self.labels[i], "index": index,
                "audio_present": self.audio_present[i], "video_present": self.video_present[i]}


def collate(items: dict[str, Tensor] | list[dict[str, Tensor | int]]) -> dict[str, Tensor]:
    """The DataLoader's collate: a batch ``ClipDataset.__getitems__`` already stacked passes through."""
    return items if isinstance(items, dict) else default_collate(items)
