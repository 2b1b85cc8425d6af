"""``AVDataModule``: manifest → decoded, cached tensors → batches for every split and every test condition.

Batch contract (a dict): ``audio`` float32 (B, 1, n_mels, target_length), ``video`` float32 (B, 3, T, H, W),
``label`` int64 (B,) (multiclass) or float32 (B, C) multi-hot (multi-label), ``index`` int64 (B,) = the clip's row
in the manifest (stable across splits and runs).

- The clips come from ``fusionbench.data.datasets.records_for(data_cfg)``: the reader ``data.dataset`` names, with the
  integrity rules applied and every split assigned. The datamodule knows nothing of any one dataset.
- ``setup()`` reads every split from the prepared store (``cache.py``), decoding into it what is missing
  (``store.prepare_split``: parallel, resumable; ``fusionbench data prepare`` does it ahead). ``on_error="skip"``:
  clips that fail to decode are left out, listed in ``skipped`` as (path, reason) and reported in one warning;
  ``"raise"``: the first one raises ``MediaError`` naming the file and the reason. A file without an audio or video
  stream follows ``data.missing_modality`` (``store.judge``: absent = kept, masked; skip; error). A split left empty
  (by skipping, or by the data) is a ``UserError`` naming the split and how many of its clips were skipped.
- Train batches are shuffled by a ``torch.Generator`` seeded from ``seed`` and get SpecAugment; val/test never do.
- Under DDP each rank reads its share (``shards.rank_sampler``): W ranks at batch b see one process's batches of W·b.
- ``test_dataloader()`` returns a list: [clean test set, one loader per corrupting condition]; ``test_conditions[i]``
  lists the conditions evaluated on loader i (the clean loader carries every non-corrupting one, e.g. av /
  audio_only / video_only). A corrupting loader serves the test split as that condition corrupts it, computed once
  per (preprocessing key, condition) by ``corrupt_split`` and kept in the cache (``cache.CorruptedSplit``), so
  every later run on the same data loads it: audio conditions store the raw fbank of the corrupted waveforms,
  video conditions the corrupted frames; the other modality is the clean split's. The features are bit-identical
  to corrupting each clip with ``condition.corrupt(waveform, frames, clip_index)`` and recomputing its fbank
  (``ClipDataset(condition=…)``, the reference path).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fusionbench.config import DataConfig, data_root, project_path
from fusionbench.data import store
from fusionbench.data.cache import FBANK_DTYPE, CorruptedSplit, DecodedSplit, SplitCache
from fusionbench.data.clip_dataset import ClipDataset, collate
from fusionbench.data.datasets import DatasetRecords, records_for
from fusionbench.data.features import AudioFeatures, SpecAugment, VideoFeatures, single_thread
from fusionbench.data.manifest import Clip, file_hash, media_fingerprint
from fusionbench.data.media import MediaError
from fusionbench.data.shards import rank_sampler
from fusionbench.errors import UserError
from fusionbench.evaluate.conditions import CORRUPTION_VERSION, Condition

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
WAVEFORM_SPLITS = ("test",)  # splits whose waveform is kept (test-time corruptions need it)
PARALLEL_DECODE_MIN = store.PARALLEL_DECODE_MIN  # decode in a process pool only above this many clips
CORRUPT_CHUNK = 64  # clips per vectorised video corruption (bounds the float copy: 64 × T·H·W·3 × 4 bytes)


def decode_split(
    clips: Sequence[tuple[int, Clip]],
    *,
    decode_kwargs: dict[str, Any],
    audio: AudioFeatures,
    on_error: str = "raise",
    missing_modality: str = "absent",
    keep_waveform: bool = False,
    workers: int = 1,
    min_parallel: int = PARALLEL_DECODE_MIN,
) -> DecodedSplit:
    """Decode (row, clip) pairs into stacked tensors in memory (``store.decode_split``: the tensors the store holds);
    failures raise or are recorded in ``skipped``, clips without a modality follow ``missing_modality``.

    With ``workers`` > 1 and at least ``min_parallel`` clips, decoding runs in a process pool (same output).
    """
    return store.decode_split(split_plan(clips, decode_kwargs, audio, keep_waveform), audio,
                              missing_modality=missing_modality, on_error=on_error, workers=workers,
                              min_parallel=min_parallel)


def split_plan(clips: Sequence[tuple[int, Clip]], decode_kwargs: dict[str, Any], audio: AudioFeatures,
               keep_waveform: bool, window: int = 0, windows: int = 1) -> store.SplitPlan:
    """The decode jobs of (row, clip) pairs: each clip's window ``window`` of ``windows`` (``data/windows.py``,
    resolved in the worker that decodes it) and the split's geometry."""
    jobs = [(row, str(c.path), {**decode_kwargs, "window": {"start_s": c.start_s, "end_s": c.end_s, "window": window,
                                                              "windows": windows}})
            for row, c in clips]
    return store.SplitPlan(
        jobs=jobs, num_frames=int(decode_kwargs["num_frames"]), size=int(decode_kwargs["size"]),
        samples=round(decode_kwargs["sample_rate"] * decode_kwargs["clip_seconds"]), fbank_shape=audio.shape,
        keep_waveform=keep_waveform,
    )


def corrupt_split(
    data: DecodedSplit, condition: Condition, audio: AudioFeatures, chunk: int = CORRUPT_CHUNK
) -> CorruptedSplit:
    """The clips of ``data`` as ``condition`` corrupts them, as stacked tensors (only the modality it changes).

    Audio: the raw fbank (``audio.raw``, as for clean clips) of each clip's corrupted waveform. Video: the
    corrupted uint8 frames, vectorised over ``chunk`` clips at a time (``Condition.corrupt_frames``). Bit-identical
    to ``condition.corrupt(waveform, frames, index)`` per clip.
    """
    if not condition.corrupts:
        raise ValueError(f"condition {condition.name} does not corrupt its inputs")
    indices = data.index.tolist()
    out = CorruptedSplit(condition=condition.name, version=CORRUPTION_VERSION, index=data.index.clone())
    with single_thread():  # the reference path's threading (ClipDataset.__getitem__): same reductions, same bits
        if condition.corrupted_modality == "audio":
            if data.waveform is None:
                raise ValueError(f"condition {condition.name} needs waveforms, which this split does not store")
            fbanks = [audio.raw(condition.corrupt(data.waveform[i], data.frames[i], index)[0])
                      for i, index in enumerate(indices)]  # each (1, n_mels, L)
            out.fbank = torch.stack(fbanks) if fbanks else torch.zeros(0, 1, *audio.shape, dtype=FBANK_DTYPE)
        else:
            parts = [condition.corrupt_frames(data.frames[start : start + chunk], indices[start : start + chunk])
                     for start in range(0, len(indices), chunk)]
            out.frames = torch.cat(parts) if parts else data.frames[:0].clone()
    return out


def fit_normalisation(train: DecodedSplit, audio: AudioFeatures, video: VideoFeatures) -> dict[str, float]:
    """Set ``audio`` and ``video`` to normalise by the training split's statistics; returns them by name.

    Audio: one mean and one std over every fbank value of the clips that have audio, as AST's dataset statistics
    (the config's ``norm_std_scale`` still divides). Video: per-channel mean and std of the pixels in [0, 1] of the
    clips that have video, the role ImageNet's statistics play for a pretrained backbone, from exact per-channel
    histograms (bit-reproducible). fusionbench's rule for models trained from scratch: with a fixed (0.5, 0.5), the
    mean frame is 87 % of a synthetic video token's energy and the shape 3.6 % (modsum, measured), and the cross-modal
    tasks stall on that offset. A split without audio (video) keeps the config's audio (video) statistics; a constant
    input keeps std 1. Absent modalities' placeholder zeros never enter the statistics.
    """
    stats: dict[str, float] = {}
    moments = _fbank_moments(train)
    if moments is not None:
        mean, std = moments
        audio.norm_mean = mean
        audio.norm_div = audio.norm_std_scale * (std if std > 0 else 1.0)
        stats.update(audio_mean=mean, audio_std=std)
    counts = _pixel_counts(train)  # (3, 256)
    if counts.sum():
        levels = torch.arange(256, dtype=torch.float64)  # (256,)
        n = counts.sum(1).double()  # (3,)
        mean = counts.double() @ levels / n / 255  # (3,)
        var = (counts.double() @ levels**2 / n / 255**2 - mean**2).clamp_min(0)
        std = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
        video.mean, video.std = mean.float(), std.float()  # (3,)
        stats.update({f"video_mean_{c}": float(m) for c, m in zip("rgb", mean)})
        stats.update({f"video_std_{c}": float(s) for c, s in zip("rgb", std)})
    return stats


FEATURE_STD_FLOOR = 0.01  # data.norm_by=feature: a feature's std is at least this fraction of its channel's


def fit_feature_normalisation(train: DecodedSplit, audio: AudioFeatures, video: VideoFeatures) -> dict[str, float]:
    """``data.norm_by=feature``: set ``audio`` and ``video`` to standardise every input feature by its own training
    statistics (each fbank bin × frame, each pixel × channel: mean and std over the training clips that have the
    modality); returns summary statistics by name (per modality / channel: the mean, and the median feature std).

    fusionbench's choice, for tasks whose signal is a small change on a large component common to every clip (sync:
    per channel, the mean clip was 3.7× the audio event's contrast, and no fusion learnt it; README, "sync"). Per
    feature, that common component is removed exactly. A feature's std is floored at ``FEATURE_STD_FLOOR`` × its
    channel's std (constant padding frames would otherwise divide by 0); the config's ``norm_std_scale`` still
    divides. A split without audio (video) keeps the config's audio (video) statistics.
    """
    stats: dict[str, float] = {}
    audio_moments = _feature_moments(train.fbank, train.has_audio)
    if audio_moments is not None:
        mean, std, channel_std = audio_moments  # (1, n_mels, L) each, ()
        audio.norm_mean = mean.float()
        audio.norm_div = audio.norm_std_scale * std.clamp_min(FEATURE_STD_FLOOR * channel_std).float()
        stats.update(audio_mean=float(mean.mean()), audio_feature_std_median=float(std.median()))
    video_moments = _feature_moments(train.frames, train.has_video, scale=1 / 255)
    if video_moments is not None:
        mean, std, _ = video_moments  # (T, H, W, 3) each
        mean, std = mean.movedim(-1, 0), std.movedim(-1, 0)  # (3, T, H, W): the layout VideoFeatures outputs
        channel_std = (std.square().mean((1, 2, 3)) + mean.var((1, 2, 3), correction=0)).sqrt()  # (3,)
        floor = (FEATURE_STD_FLOOR * channel_std).view(3, 1, 1, 1).expand_as(std)
        video.mean, video.std = mean.float(), torch.maximum(std, floor).float()
        stats.update({f"video_mean_{c}": float(m) for c, m in zip("rgb", mean.mean((1, 2, 3)))})
        stats.update({f"video_feature_std_median_{c}": float(s.median()) for c, s in zip("rgb", std)})
    return stats


def _feature_moments(values: Tensor, present: Tensor, scale: float = 1.0, chunk: int = CORRUPT_CHUNK
                     ) -> tuple[Tensor, Tensor, Tensor] | None:
    """Per-feature mean and (unbiased) std over the clips of ``values`` (N, …) that ``present`` marks, in float64 and
    two passes over ``chunk`` clips at a time, each value times ``scale``; and the std of all those values together
    (population, from the per-feature moments). None when no clip is present."""
    n = int(present.sum())
    if n == 0:
        return None
    rows = lambda start: values[start : start + chunk][present[start : start + chunk]].double() * scale  # noqa: E731
    starts = range(0, len(values), chunk)
    mean = sum(rows(start).sum(0) for start in starts) / n  # (…)
    squares = sum((rows(start) - mean).square().sum(0) for start in starts)  # (…)
    std = (squares / max(n - 1, 1)).sqrt()
    overall = (squares.sum() / (n * mean.numel()) + mean.var(correction=0)).sqrt()
    return mean, std, overall


def _fbank_moments(data: DecodedSplit, chunk: int = 4 * CORRUPT_CHUNK) -> tuple[float, float] | None:
    """Mean and (unbiased) std of every fbank value of the clips that have audio, in float64, two passes over
    ``chunk`` clips at a time (a bounded copy of the memory-mapped fbank); None when no clip has audio."""
    parts = [(start, data.has_audio[start : start + chunk]) for start in range(0, len(data), chunk)]
    n = sum(int(mask.sum()) for _, mask in parts) * int(data.fbank[0].numel() if len(data) else 0)
    if n == 0:
        return None
    total = sum(data.fbank[start : start + chunk][mask].double().sum().item() for start, mask in parts)
    mean = total / n
    squares = sum((data.fbank[start : start + chunk][mask].double() - mean).square().sum().item()
                  for start, mask in parts)
    return mean, (squares / (n - 1)) ** 0.5 if n > 1 else 0.0


def _pixel_counts(data: DecodedSplit, chunk: int = CORRUPT_CHUNK) -> Tensor:
    """Per-channel histograms int64 (3, 256) of the uint8 pixels of the clips that have video, ``chunk`` clips at a
    time (exact; a bounded copy of the memory-mapped frames)."""
    counts = torch.zeros(3, 256, dtype=torch.int64)
    for start in range(0, len(data), chunk):
        frames = data.frames[start : start + chunk][data.has_video[start : start + chunk]]  # (n, T, H, W, 3)
        for c in range(3):
            counts[c] += torch.bincount(frames[..., c].reshape(-1), minlength=256)
    return counts


def train_pixel_mean(train: DecodedSplit) -> Tensor:
    """Per-channel mean pixel in [0, 1] of a split's uint8 frames (clips with video), float32 (3,) (exact per-channel
    histograms, as ``fit_normalisation``); mid-grey for a split without video."""
    counts = _pixel_counts(train)  # (3, 256)
    if not counts.sum():
        return torch.full((3,), 0.5)
    levels = torch.arange(256, dtype=torch.float64)  # (256,)
    return (counts.double() @ levels / counts.sum(1).double() / 255).float()  # (3,)


def window_entries(split: str, windows: int) -> list[str]:
    """The cache entries of a split's windows: the split's name for its one centred window, else
    ``<split>-w<k>of<n>``."""
    return [split] if windows == 1 else [f"{split}-w{k}of{windows}" for k in range(windows)]


def common_clips(windows: list[DecodedSplit]) -> list[DecodedSplit]:
    """The windows of a split restricted to the clips every window decoded (a window past a clip's end can fail
    where another does not); the failing window's ``skipped`` names the clip."""
    if len(windows) == 1:
        return windows
    common = set.intersection(*(set(w.index.tolist()) for w in windows))
    if all(len(w) == len(common) for w in windows):
        return windows
    out = []
    for w in windows:
        keep = torch.tensor([i for i, row in enumerate(w.index.tolist()) if row in common], dtype=torch.int64)
        out.append(DecodedSplit(
            index=w.index[keep], frames=w.frames[keep], fbank=w.fbank[keep], has_audio=w.has_audio[keep],
            waveform=None if w.waveform is None else w.waveform[keep], skipped=list(w.skipped),
            has_video=w.has_video[keep], padded_frames=w.padded_frames[keep], padded_audio_s=w.padded_audio_s[keep]))
    return out


class AVDataModule(L.LightningDataModule):
    """Audio-visual clips of one dataset, whichever reader yields them (see the module docstring)."""

    def __init__(
        self,
        data_cfg: DictConfig,
        seed: int = 0,
        conditions: Sequence[Condition] = (),
        *,
        decode_workers: int | None = None,
        progress: bool = False,
        chunk_clips: int = store.CHUNK_CLIPS,
        min_parallel: int = PARALLEL_DECODE_MIN,
        test_windows: int = 1,
    ) -> None:
        """``test_windows``: eval.test_windows (multi-clip evaluation); the training windows are data.train_windows."""
        super().__init__()
        if not isinstance(data_cfg, DictConfig):
            data_cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), data_cfg)
        self.cfg = data_cfg
        self.seed = int(seed)
        self.conditions = list(conditions)
        self.train_windows, self.test_windows = int(data_cfg.train_windows), int(test_windows)
        self.decode_workers = min(2, os.cpu_count() or 1) if decode_workers is None else int(decode_workers)
        self.progress, self.chunk_clips, self.min_parallel = progress, int(chunk_clips), int(min_parallel)
        self.audio_features = store.StoredAudioFeatures(data_cfg.audio)  # raw fbank at the store's precision
        self.video_features = VideoFeatures(data_cfg.video)
        self.spec_augment = SpecAugment(int(data_cfg.audio.freqm), int(data_cfg.audio.timem))
        self.skipped: list[tuple[str, str]] = []
        self.decode_count = 0  # clips decoded by this module (0 on a full cache hit)
        self.prepare_stats: dict[str, store.SplitStats] = {}  # per split decoded into the store by setup()
        self.corrupt_count = 0  # corrupted splits computed by this module (0 when all came from the cache)
        self.cache: SplitCache | None = None
        self.data: dict[str, DecodedSplit] = {}  # split → its first (or only) window
        self.windows: dict[str, list[DecodedSplit]] = {}  # split → every window (data/windows.py)
        self._corrupted: dict[tuple[str, str], DecodedSplit] = {}  # (split, condition name) → corrupted split
        self.norm_stats: dict[str, float] = {}  # the statistics fitted by norm_stats="train" (set up by setup())

    # ------------------------------------------------------------------------------------------- records

    @functools.cached_property
    def records(self) -> DatasetRecords:
        """The dataset's records (``records_for``): clips with splits, class names, the reader's report, sources."""
        return records_for(self.cfg, workers=self.decode_workers)

    @property
    def clips(self) -> list[Clip]:
        """Every clip; a clip's position here is its ``index`` in batches."""
        return self.records.clips

    @property
    def multilabel(self) -> bool:
        return self.records.multilabel

    @property
    def class_names(self) -> list[str]:
        return list(self.records.class_names)

    # ------------------------------------------------------------------------------------------- geometry

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def audio_shape(self) -> tuple[int, int]:
        return self.audio_features.shape  # (n_mels, target_length)

    @property
    def video_shape(self) -> tuple[int, int, int]:
        return int(self.cfg.video.num_frames), int(self.cfg.video.size), int(self.cfg.video.size)  # (T, H, W)

    @property
    def test_conditions(self) -> list[list[Condition]]:
        """Conditions evaluated on each test dataloader: [non-corrupting ones] + [[c] for each corrupting c]."""
        return [[c for c in self.conditions if not c.corrupts]] + [[c] for c in self.conditions if c.corrupts]

    # ------------------------------------------------------------------------------------------- sources

    @property
    def manifest_path(self) -> Path:
        """The dataset's first annotation file (e.g. its clips.csv)."""
        return self.records.sources[0]

    @property
    def synth_dir(self) -> Path:
        """The generated synthetic set of a synth config (``datasets.synth.set_dir_for``; for tools and tests)."""
        from fusionbench.data.datasets.synth import set_dir_for

        return set_dir_for(self.cfg)

    def _read_manifest(self) -> list[Clip]:
        return self.clips

    # ------------------------------------------------------------------------------------------- setup

    def prepare_data(self) -> None:
        self.records  # reads the annotations (and generates a synthetic set that is missing)

    def preprocess_params(self) -> dict[str, Any]:
        """Everything that changes the decoded tensors: the cache key's input."""
        a = self.cfg.audio
        return {
            "sources_sha256": [file_hash(path) for path in self.records.sources],
            "media": media_fingerprint(clip.path for clip in self.clips),
            "media_root": str(data_root(self.cfg).resolve()),
            "decode": self._decode_kwargs(),
            "fbank": {
                "sample_rate": int(a.sample_rate), "num_mel_bins": int(a.num_mel_bins),
                "frame_length_ms": float(a.frame_length_ms), "frame_shift_ms": float(a.frame_shift_ms),
                "target_length": int(a.target_length), "dtype": str(FBANK_DTYPE).removeprefix("torch."),
            },
            "missing_modality": str(self.cfg.missing_modality),
            "splits": {"rows": hashlib.sha256(json.dumps([c.split for c in self.clips]).encode()).hexdigest(),
                       "waveform": list(WAVEFORM_SPLITS)},
        }

    def _decode_kwargs(self) -> dict[str, Any]:
        return {
            "num_frames": int(self.cfg.video.num_frames), "size": int(self.cfg.video.size),
            "sample_rate": int(self.cfg.audio.sample_rate), "clip_seconds": float(self.cfg.clip_seconds),
            # the decoder reports a missing stream; data.missing_modality decides (store.judge)
            "allow_missing_audio": True, "allow_missing_video": True,
        }

    def num_windows(self, split: str) -> int:
        """Windows per clip of ``split`` (``data/windows.py``): data.train_windows for train (one drawn per item and
        epoch), eval.test_windows for test (logits averaged), the centred one for val."""
        return {"train": self.train_windows, "test": self.test_windows}.get(split, 1)

    def _decoded(self, entry: str, members: list[tuple[int, Clip]], keep_waveform: bool, window: int,
                 windows: int) -> DecodedSplit:
        """Window ``window`` of ``windows`` of a split's clips: from the store, or decoded into it (resumable)."""
        data = self.cache.get(entry) if self.cache.dir is not None else None
        if data is None:
            plan = split_plan(members, self._decode_kwargs(), self.audio_features, keep_waveform, window, windows)
            policies = dict(missing_modality=self.cfg.missing_modality, on_error=self.cfg.on_error,
                            workers=self.decode_workers, min_parallel=self.min_parallel)
            if self.cache.dir is None:
                data = store.decode_split(plan, self.audio_features, **policies)
                self.decode_count += len(members)
            else:
                data, stats = store.prepare_split(self.cache, entry, plan, self.audio_features, **policies,
                                                  chunk=self.chunk_clips, progress=self.progress)
                self.decode_count += stats.decoded
                self.prepare_stats[entry] = stats
        else:
            self.prepare_stats[entry] = store.SplitStats(entry, len(members), 0, 0, len(data), len(data.skipped),
                                                         0.0, cached=True)
        failed = [s for s in data.skipped if not store.is_policy_skip(s[1])]
        if failed and self.cfg.on_error == "raise":  # cached by an earlier on_error=skip run
            path, reason = failed[0]
            raise MediaError(path, reason)
        return data

    def setup(self, stage: str | None = None) -> None:
        if self.data:
            return
        clips = self.clips
        if self.records.report:  # what the reader and the integrity rules left out or flagged
            counts = ", ".join(f"{n} {status}" for status, n in sorted(self.records.counts().items()))
            first = "; ".join(f"{r.where}: {r.reason}" for r in self.records.report[:2])
            log.warning("data report: %s (%d clips kept). First: %s", counts, len(clips), first)
        cache_dir = project_path(self.cfg.cache_dir) if self.cfg.cache_dir else None
        self.cache = SplitCache(cache_dir, self.preprocess_params())
        for split in SPLITS:
            members = [(row, c) for row, c in enumerate(clips) if c.split == split]
            entries = window_entries(split, self.num_windows(split))
            windows = [self._decoded(entry, members, split in WAVEFORM_SPLITS, k, len(entries))
                       for k, entry in enumerate(entries)]
            self.windows[split] = common_clips(windows)
            self.data[split] = self.windows[split][0]
        # every clip a window left out, once (a clip past its end in several windows is one clip)
        self.skipped = list(dict.fromkeys(s for split in SPLITS for w in self.windows[split] for s in w.skipped))
        for split in SPLITS:
            if not len(self.data[split]):
                listed = sum(c.split == split for c in clips)
                skipped = len(self.data[split].skipped)
                first = "; first: {}: {}".format(*self.data[split].skipped[0]) if skipped else ""
                raise UserError(
                    f"the {split} split is empty: {skipped} of its {listed} clips were skipped{first}" if listed else
                    f"the {split} split has no clips (set data.val_frac / data.test_frac, or give the data a "
                    f"{split} split)", where=str(self.manifest_path))
        if self.cfg.norm_stats == "train":
            fit = fit_feature_normalisation if self.cfg.norm_by == "feature" else fit_normalisation
            self.norm_stats = fit(self.data["train"], self.audio_features, self.video_features)
        if self.skipped:
            counts = ", ".join(f"{split} {len(self.data[split].skipped)}" for split in SPLITS)
            first = "; ".join(f"{p}: {r}" for p, r in self.skipped[:3])
            log.warning(
                "skipped %d of %d clips (failed to decode, or data.missing_modality=skip) (%s). First: %s",
                len(self.skipped), len(clips), counts, first,
            )

    # ------------------------------------------------------------------------------------------- loaders

    def labels(self, split: str) -> Tensor:
        """Labels of the decoded clips of ``split``: int64 (N,) or float32 multi-hot (N, C)."""
        clips = self.clips
        rows = self.data[split].index.tolist()
        if self.multilabel:
            out = torch.zeros(len(rows), self.num_classes, dtype=torch.float32)
            for i, row in enumerate(rows):
                out[i, list(clips[row].labels)] = 1.0
            return out
        for row in rows:
            if len(clips[row].labels) != 1:
                raise ValueError(f"{clips[row].path}: {len(clips[row].labels)} labels in a single-label dataset")
        return torch.tensor([clips[row].labels[0] for row in rows], dtype=torch.int64)

    def occlusion_fill(self) -> Tensor:
        """``video_occlusion``'s fill: the training split's per-channel mean pixel in [0, 1], float (3,) — the
        fitted normalisation mean with ``norm_stats=train`` and ``norm_by=channel`` (the same tensor), else computed
        from the train frames.
        A function of the decoded data, hence of the cache key: cached corrupted splits stay valid."""
        if not self.data:
            self.setup()
        if self.cfg.norm_stats == "train" and self.cfg.norm_by == "channel" and len(self.data["train"]):
            return self.video_features.mean
        return train_pixel_mean(self.data["train"])

    def corrupted(self, split: str, condition: Condition, window: int = 0) -> DecodedSplit:
        """Window ``window`` of ``split`` as ``condition`` corrupts it: loaded from the cache, or computed (and
        stored) once."""
        if not self.data:
            self.setup()
        if condition.kind == "video_occlusion" and condition.fill is None:
            condition = condition.with_fill(self.occlusion_fill())
        entry = window_entries(split, len(self.windows[split]))[window]
        key = (entry, condition.name)
        if key not in self._corrupted:
            clean = self.windows[split][window]

            def build() -> CorruptedSplit:
                self.corrupt_count += 1
                return corrupt_split(clean, condition, self.audio_features)

            stored = self.cache.get_or_build_condition(entry, condition.name, build, index=clean.index,
                                                       version=CORRUPTION_VERSION)
            self._corrupted[key] = stored.over(clean)
        return self._corrupted[key]

    def corrupted_windows(self, split: str, condition: Condition) -> list[DecodedSplit]:
        """Every window of ``split`` as ``condition`` corrupts it (``corrupted``)."""
        if not self.data:
            self.setup()
        return [self.corrupted(split, condition, k) for k in range(len(self.windows[split]))]

    def dataset(self, split: str, condition: Condition | None = None) -> ClipDataset:
        """The items of ``split``; with a corrupting ``condition``, as it corrupts them (``corrupted``)."""
        if not self.data:
            self.setup()
        windows = self.windows[split]
        if condition is not None and condition.corrupts:
            windows = self.corrupted_windows(split, condition)
        return ClipDataset(
            windows if len(windows) > 1 else windows[0], self.labels(split), self.audio_features, self.video_features,
            augment=self.spec_augment if split == "train" else None, pick="random" if split == "train" else "stack",
        )

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = int(self.cfg.num_workers)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=int(self.cfg.batch_size),
            collate_fn=collate,
            sampler=rank_sampler(dataset, shuffle, generator, self.trainer),  # DDP: this rank's share (data/shards.py)
            generator=generator,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        loaders = [self._loader(self.dataset("test"), shuffle=False)]
        for condition in self.conditions:
            if condition.corrupts:
                loaders.append(self._loader(self.dataset("test", condition), shuffle=False))
        return loaders
