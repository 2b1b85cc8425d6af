"""Decoded-tensor cache: each split decoded and featurised once, loaded (memory-mapped) by every later run.

Layout: ``cache_dir/<key>/<split>.pt`` plus ``meta.json`` (the parameters, for humans). ``key`` is a hash of
everything that changes the stored tensors: the decode parameters, the fbank parameters, the manifest file's
content hash and the folder its paths resolve against (``cache_key``). Changing any of them gives another key,
so stale tensors are never read; the normalisation stats and SpecAugment are applied at load time and are not
part of the key.

Stored per split (``DecodedSplit``): frames uint8 (N, T, H, W, 3), raw fbank (N, 1, n_mels, L) before
normalisation and SpecAugment, the manifest row of each clip, ``has_audio``, and for the test split the waveform
float32 (N, S), which test-time corruptions need (``Condition.corrupt`` works on waveform + frames, then the
features are recomputed). Measured on the default synthetic set: an fbank costs ≈1.3 ms per clip to compute and
≈0.02 ms to load, so fbanks are stored (float32: 20 KB a clip, exact); waveforms (128 KB a clip) only where needed.

Files are written to a temporary name and renamed, so a killed process never leaves a corrupt cache entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

CACHE_VERSION = 1  # bump when the stored layout or the decode/feature code changes what is stored


@dataclass
class DecodedSplit:
    index: Tensor  # int64 (N,): manifest row of each clip
    frames: Tensor  # uint8 (N, T, H, W, 3)
    fbank: Tensor  # float (N, 1, n_mels, target_length), raw (not normalised)
    has_audio: Tensor  # bool (N,)
    waveform: Tensor | None = None  # float32 (N, S), test split only
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of clips that failed to decode

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "frames": self.frames, "fbank": self.fbank, "has_audio": self.has_audio,
            "waveform": self.waveform, "skipped": [list(s) for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecodedSplit":
        return cls(
            index=d["index"], frames=d["frames"], fbank=d["fbank"], has_audio=d["has_audio"],
            waveform=d.get("waveform"), skipped=[tuple(s) for s in d.get("skipped", [])],
        )


def cache_key(params: dict[str, Any]) -> str:
    """Hash of the preprocessing parameters (JSON with sorted keys)."""
    blob = json.dumps({"version": CACHE_VERSION, **params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class SplitCache:
    """``get_or_build(split, build)``: load ``<dir>/<split>.pt`` or build, store and return it.

    ``root`` None disables caching (every call builds). ``hits`` / ``misses`` count lookups.
    """

    def __init__(self, root: str | Path | None, params: dict[str, Any]) -> None:
        self.params = params
        self.key = cache_key(params)
        self.dir = Path(root) / self.key if root else None
        self.hits = 0
        self.misses = 0

    def path(self, split: str) -> Path | None:
        return self.dir / f"{split}.pt" if self.dir else None

    def get(self, split: str) -> DecodedSplit | None:
        path = self.path(split)
        if path is None or not path.is_file():
            self.misses += 1
            return None
        try:
            data = torch.load(path, mmap=True, weights_only=True)
        except Exception:  # unreadable (e.g. written by another torch): treat as a miss and rebuild
            self.misses += 1
            return None
        self.hits += 1
        return DecodedSplit.from_dict(data)

    def put(self, split: str, data: DecodedSplit) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            _atomic(meta, lambda f: f.write(json.dumps(self.params, indent=2, sort_keys=True, default=str).encode()))
        _atomic(self.path(split), lambda f: torch.save(data.to_dict(), f))

    def get_or_build(self, split: str, build: Callable[[], DecodedSplit]) -> DecodedSplit:
        data = self.get(split)
        if data is None:
            data = build()
            self.put(split, data)
        return data


def _atomic(path: Path, write: Callable[[Any], None]) -> None:
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
