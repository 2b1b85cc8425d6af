"""Data: synthetic generator, manifests, PyAV media decoding, features, the decoded-tensor cache, the datamodule.

Names are imported lazily, so ``fusionbench.data.synthetic`` / ``media`` (numpy + PyAV only) load without torch
or Lightning, e.g. in decode and generator worker processes.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TASKS": "synthetic", "generate": "synthetic", "render_clip": "synthetic", "ClipFactors": "synthetic",
    "Clip": "manifest", "read_manifest": "manifest", "ManifestError": "manifest",
    "decode_clip": "media", "DecodedClip": "media", "MediaError": "media",
    "AudioFeatures": "features", "SpecAugment": "features", "VideoFeatures": "features",
    "SplitCache": "cache", "AVDataModule": "datamodule",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
