"""Decoded-tensor cache (the prepared store): each split decoded and featurised once, memory-mapped by every later run.

Layout: ``cache_dir/<key>/`` holds ``meta.json`` (the parameters, for humans) and one folder per complete split,
``<split>/``, of numpy ``.npy`` arrays (``ARRAYS``), ``skipped.json`` and the ``COMPLETE`` marker, written last: a
folder is renamed into place whole, so a split is readable only once complete. ``key`` is a hash of everything that
changes the stored tensors: the decode parameters, the missing-modality policy, the fbank parameters, the manifest
file's content hash, each media file's size and modification time (``manifest.media_fingerprint``: a set regenerated
in place keeps its manifest) and the folder its paths resolve against (``cache_key``). Changing any of them gives
another key, so stale tensors are never read; the normalisation stats and SpecAugment are applied at load time and
are not part of the key. ``fusionbench.data.store`` writes a split incrementally (resumable chunks); ``write_split``
here writes one whole (the same format).

Stored per split (``DecodedSplit``): frames uint8 (N, T, H, W, 3), raw fbank float16 (N, 1, n_mels, L) before
normalisation and SpecAugment, the manifest row of each clip, ``has_audio`` / ``has_video``, the padding per clip
(``padded_frames`` int32, ``padded_audio_s`` float32, as ``media.DecodedClip`` counts it), and for the test split
the waveform float32 (N, S), which test-time corruptions need (``Condition.corrupt`` works on waveform + frames, then
the features are recomputed, once per condition: see below). Measured on the default synthetic set: an fbank costs
≈1.3 ms per clip to compute and ≈0.02 ms to load, so fbanks are stored; as float16 (fusionbench's choice: half of
float32, 10 KB a clip at the tiny geometry; each value rounded with a relative error ≤ 2⁻¹¹ ≈ 4.9e-4, and every path
that recomputes an fbank rounds the same way: ``store.StoredAudioFeatures``); waveforms (128 KB a clip) only where
needed. Arrays are opened copy-on-write (``mmap_mode="c"``): tensors are writable views, and writes never reach the
files.

Corrupted test sets (``CorruptedSplit``): ``cache_dir/<key>/<split>.<condition>.pt``, i.e. the preprocessing key
plus the condition name, holds the split as one corrupting condition changes it — only the modality it corrupts:
the raw fbank of the corrupted waveforms (audio conditions) or the corrupted uint8 frames (video conditions). The
corruptions are deterministic (seeded by condition and clip), so every run on the same data shares them. An entry
also records the corruption code's version and the clean split's rows; a mismatch is a miss (rebuilt).

Files are written to a temporary name and renamed, so a killed process never leaves a corrupt cache entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

# Bump when the stored layout or the decode/feature code changes what is stored.
# 2: the decoder's channel-mean down-mix and first-timestamp time origin (2026-12-02).
# 3: the prepared store: .npy folders per split, float16 fbank, has_video and padding per clip (2026-12-02).
# 4: windows: a trimmed clip longer than the window is centred on its file; <split>-w<k>of<n> entries (2026-12-02).
CACHE_VERSION = 4
FBANK_DTYPE = torch.float16  # the stored fbank's precision (see the module docstring)
COMPLETE = "COMPLETE"  # a split folder's completion marker (JSON), written last
# the arrays of a split folder: name → numpy dtype (waveform only where stored)
ARRAYS = {"index": np.int64, "frames": np.uint8, "fbank": np.float16, "has_audio": np.bool_, "has_video": np.bool_,
          "padded_frames": np.int32, "padded_audio_s": np.float32, "waveform": np.float32}
_ENTRY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # condition names as file-name parts (parse_condition's are)


@dataclass
class DecodedSplit:
    index: Tensor  # int64 (N,): manifest row of each clip
    frames: Tensor  # uint8 (N, T, H, W, 3)
    fbank: Tensor  # float16 (N, 1, n_mels, target_length), raw (not normalised)
    has_audio: Tensor  # bool (N,): the file has an audio stream (False: fbank zeros, masked as absent)
    waveform: Tensor | None = None  # float32 (N, S), test split only
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of clips that failed to decode
    has_video: Tensor | None = None  # bool (N,): the file has a video stream (False: frames zeros); None → all True
    padded_frames: Tensor | None = None  # int32 (N,): frames repeating the first/last one; None → zeros
    padded_audio_s: Tensor | None = None  # float32 (N,): seconds of zero audio the stream did not cover; None → zeros

    def __post_init__(self) -> None:
        n = int(self.index.shape[0])
        if self.has_video is None:
            self.has_video = torch.ones(n, dtype=torch.bool)
        if self.padded_frames is None:
            self.padded_frames = torch.zeros(n, dtype=torch.int32)
        if self.padded_audio_s is None:
            self.padded_audio_s = torch.zeros(n, dtype=torch.float32)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "frames": self.frames, "fbank": self.fbank, "has_audio": self.has_audio,
            "waveform": self.waveform, "skipped": [list(s) for s in self.skipped], "has_video": self.has_video,
            "padded_frames": self.padded_frames, "padded_audio_s": self.padded_audio_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecodedSplit":
        return cls(
            index=d["index"], frames=d["frames"], fbank=d["fbank"], has_audio=d["has_audio"],
            waveform=d.get("waveform"), skipped=[tuple(s) for s in d.get("skipped", [])],
            has_video=d.get("has_video"), padded_frames=d.get("padded_frames"),
            padded_audio_s=d.get("padded_audio_s"),
        )


@dataclass
class CorruptedSplit:
    """One split as one corrupting test condition changes it; only the corrupted modality is stored."""

    condition: str  # the condition's name
    version: int  # the corruption code's version (``conditions.CORRUPTION_VERSION``)
    index: Tensor  # int64 (N,): the clean split's manifest rows, in its order
    fbank: Tensor | None = None  # float16 (N, 1, n_mels, L): raw fbank of the corrupted waveforms (audio)
    frames: Tensor | None = None  # uint8 (N, T, H, W, 3): corrupted frames (video)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "version": self.version, "index": self.index, "fbank": self.fbank,
                "frames": self.frames}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CorruptedSplit":
        return cls(condition=d["condition"], version=int(d["version"]), index=d["index"], fbank=d.get("fbank"),
                   frames=d.get("frames"))

    def over(self, clean: DecodedSplit) -> DecodedSplit:
        """``clean`` with the corrupted modality swapped in (no waveform: nothing is to be corrupted further)."""
        if not torch.equal(self.index, clean.index):
            raise ValueError(f"corrupted split {self.condition} is of other clips than the clean split")
        return DecodedSplit(
            index=clean.index, frames=clean.frames if self.frames is None else self.frames,
            fbank=clean.fbank if self.fbank is None else self.fbank, has_audio=clean.has_audio, waveform=None,
            skipped=list(clean.skipped), has_video=clean.has_video, padded_frames=clean.padded_frames,
            padded_audio_s=clean.padded_audio_s,
        )


def cache_key(params: dict[str, Any]) -> str:
    """Hash of the preprocessing parameters (JSON with sorted keys)."""
    blob = json.dumps({"version": CACHE_VERSION, **params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_split(path: Path) -> DecodedSplit | None:
    """The complete split folder ``path`` as a ``DecodedSplit`` of memory-mapped tensors; None if it is absent,
    incomplete (no ``COMPLETE`` marker) or unreadable."""
    try:
        marker = json.loads((path / COMPLETE).read_text())
        arrays = {}
        for name in ARRAYS:
            file = path / f"{name}.npy"
            if file.is_file():
                arrays[name] = torch.from_numpy(np.load(file, mmap_mode="c", allow_pickle=False))
        skipped = [tuple(s) for s in json.loads((path / "skipped.json").read_text())]
        data = DecodedSplit(skipped=skipped, **arrays)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if marker.get("version") != CACHE_VERSION or marker.get("clips") != len(data):
        return None
    return data


def write_split(path: Path, data: DecodedSplit) -> None:
    """``data`` as a split folder at ``path``, written whole under a temporary name and renamed into place."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, dtype in ARRAYS.items():
            tensor = getattr(data, name)
            if tensor is not None:
                np.save(tmp / f"{name}.npy", tensor.numpy().astype(dtype, copy=False), allow_pickle=False)
        complete_split(tmp, path, data.skipped, len(data))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def complete_split(tmp: Path, path: Path, skipped: list[tuple[str, str]], clips: int) -> None:
    """Finish the split folder ``tmp`` (its arrays written): ``skipped.json``, every file fsync'd, the ``COMPLETE``
    marker, then renamed to ``path`` (an older folder there is replaced)."""
    (tmp / "skipped.json").write_text(json.dumps([list(s) for s in skipped]))
    for file in tmp.iterdir():
        fsync_path(file)
    atomic_write(tmp / COMPLETE, lambda f: f.write(json.dumps({"version": CACHE_VERSION, "clips": clips,
                                                          "skipped": len(skipped)}).encode()))
    fsync_path(tmp)
    if path.exists():
        old = path.parent / f".{path.name}.{os.getpid()}.old"
        os.replace(path, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, path)
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SplitCache:
    """``get_or_build(split, build)``: load the split folder ``<dir>/<split>/`` or build, store and return it.

    ``get_or_build_condition(split, condition, build, …)`` does the same for a corrupted split,
    ``<dir>/<split>.<condition>.pt``. ``root`` None disables caching (every call builds). ``hits`` / ``misses``
    count lookups of both kinds.
    """

    def __init__(self, root: str | Path | None, params: dict[str, Any]) -> None:
        self.params = params
        self.key = cache_key(params)
        self.dir = Path(root) / self.key if root else None
        self.hits = 0
        self.misses = 0

    def path(self, split: str) -> Path | None:
        return self.dir / split if self.dir else None

    def condition_path(self, split: str, condition: str) -> Path | None:
        if not _ENTRY_NAME.match(condition):
            raise ValueError(f"condition name {condition!r} is not usable in a cache file name")
        return self.dir / f"{split}.{condition}.pt" if self.dir else None

    def _load(self, path: Path | None) -> dict[str, Any] | None:
        if path is None or not path.is_file():
            return None
        try:
            return torch.load(path, mmap=True, weights_only=True)
        except Exception:  # unreadable (e.g. written by another torch): treat as a miss and rebuild
            return None

    def _count(self, found: Any) -> Any:
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def get(self, split: str) -> DecodedSplit | None:
        path = self.path(split)
        data = None if path is None else read_split(path)
        if data is not None:  # what a prepare killed after completing the split left behind
            for leftover in (self.dir / f"{split}.partial", self.dir / f".{split}.final"):
                shutil.rmtree(leftover, ignore_errors=True)
        return self._count(data)

    def put(self, split: str, data: DecodedSplit) -> None:
        if self.dir is None:
            return
        self.write_meta()
        write_split(self.path(split), data)

    def write_meta(self) -> None:
        """``<dir>/meta.json`` (the parameters, for humans), once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            text = json.dumps(self.params, indent=2, sort_keys=True, default=str)
            atomic_write(meta, lambda f: f.write(text.encode()))

    def _write(self, path: Path, payload: dict[str, Any]) -> None:
        self.write_meta()
        atomic_write(path, lambda f: torch.save(payload, f))

    def get_or_build(self, split: str, build: Callable[[], DecodedSplit]) -> DecodedSplit:
        data = self.get(split)
        if data is None:
            data = build()
            self.put(split, data)
        return data

    def get_condition(self, split: str, condition: str, *, index: Tensor, version: int) -> CorruptedSplit | None:
        """The stored corrupted split, or None (a miss) if absent, unreadable, of another corruption version or
        of other clips than ``index`` (the clean split's rows)."""
        data = self._load(self.condition_path(split, condition))
        try:
            found = None if data is None else CorruptedSplit.from_dict(data)
        except (KeyError, TypeError, ValueError):
            found = None
        if found is not None and (found.condition != condition or found.version != version
                                  or not torch.equal(found.index, index)):
            found = None
        return self._count(found)

    def put_condition(self, split: str, data: CorruptedSplit) -> None:
        path = self.condition_path(split, data.condition)
        if path is not None:
            self._write(path, data.to_dict())

    def get_or_build_condition(
        self, split: str, condition: str, build: Callable[[], CorruptedSplit], *, index: Tensor, version: int
    ) -> CorruptedSplit:
        data = self.get_condition(split, condition, index=index, version=version)
        if data is None:
            data = build()
            self.put_condition(split, data)
        return data


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
