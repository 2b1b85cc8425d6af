"""``ClipDataset``: the items of one decoded split (normalised features, labels, manifest rows), and the collate.

A batch (a dict): ``audio`` float32 (B, 1, n_mels, target_length), ``video`` float32 (B, 3, T, H, W), ``label``
int64 (B,) or float32 (B, C) multi-hot, ``index`` int64 (B,) = the clip's manifest row, ``audio_present`` /
``video_present`` bool (B,): whether the clip has that modality (``data.missing_modality=absent`` keeps clips without
one; their tensor there is a placeholder that the task never gives the model: ``tasks/presence.py``).
"""
from __future__ import annotations

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
    """

    def __init__(
        self,
        data: DecodedSplit,
        labels: Tensor,
        audio: AudioFeatures,
        video: VideoFeatures,
        augment: SpecAugment | None = None,
        condition: Condition | None = None,
    ) -> None:
        if condition is not None and condition.corrupts and data.waveform is None:
            raise ValueError(f"condition {condition.name} needs waveforms, which this split does not store")
        self.data, self.labels = data, labels
        n = len(data)
        self.audio_present = data.has_audio.bool() if data.has_audio is not None else torch.ones(n, dtype=torch.bool)
        has_video = getattr(data, "has_video", None)
        self.video_present = has_video.bool() if has_video is not None else torch.ones(n, dtype=torch.bool)
        self.audio, self.video = audio, video
        self.augment = augment if augment is not None and augment.active else None
        self.condition = condition if condition is not None and condition.corrupts else None
        if self.condition is not None and self.condition.kind == "video_occlusion" and self.condition.fill is None:
            self.condition = self.condition.with_fill(video.mean)  # the normalisation's mean: the training mean

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Tensor | int]:
        with single_thread():  # per-clip ops on small tensors: threads only add overhead (features.single_thread)
            return self._item(i)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor] | list[dict[str, Tensor | int]]:
        """A whole batch at once (the DataLoader's batched fetch): one vectorised normalisation per modality, the
        same element-wise arithmetic as ``__getitem__`` (bit-identical). Items that need per-clip work (SpecAugment,
        an on-the-fly condition) are fetched one by one; ``collate`` accepts both forms."""
        if self.augment is not None or self.condition is not None:
            return [self[i] for i in indices]
        rows = torch.as_tensor(indices, dtype=torch.int64)
        with single_thread():
            audio = self.audio.normalise(self.data.fbank[rows])  # (B, 1, n_mels, L)
            video = self.video(self.data.frames[rows])  # (B, 3, T, H, W)
        return {"audio": audio, "video": video, "label": self.labels[rows], "index": self.data.index[rows].clone(),
                "audio_present": self.audio_present[rows], "video_present": self.video_present[rows]}

    def _item(self, i: int) -> dict[str, Tensor | int]:
        index = int(self.data.index[i])
        frames = self.data.frames[i]  # (T, H, W, 3) uint8
        if self.condition is not None:
            waveform, frames = self.condition.corrupt(self.data.waveform[i], frames, index)  # (S,), (T, H, W, 3)
            audio = self.audio(waveform)  # (1, n_mels, L), recomputed from the corrupted waveform
        else:
            audio = self.audio.normalise(self.data.fbank[i])  # (1, n_mels, L)
        if self.augment is not None:
            audio = self.augment(audio)
        return {"audio": audio, "video": self.video(frames), "label": self.labels[i], "index": index,
                "audio_present": self.audio_present[i], "video_present": self.video_present[i]}


def collate(items: dict[str, Tensor] | list[dict[str, Tensor | int]]) -> dict[str, Tensor]:
    """The DataLoader's collate: a batch ``ClipDataset.__getitems__`` already stacked passes through."""
    return items if isinstance(items, dict) else default_collate(items)
