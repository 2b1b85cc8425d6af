"""``data_fingerprint(data_cfg)``: what a run's data is, for its identity (``tracking.identity_of``).

A hash of (fusionbench's rule, so a sweep re-runs a cell whose data changed instead of keeping the old numbers):

- the bytes of every annotation source the reader read (``DatasetRecords.sources``: clips.csv, class lists, ...);
- the media fingerprint (``manifest.media_fingerprint``: each clip file's path, size and mtime — stat only);
- the error policy (``data.on_error``: which clips a run keeps; not in the config hash).

A synthetic set the config asks the generator for (``data.dataset=synth`` without ``data.manifest``) is a function of
the generator request, so its fingerprint is that request (``synth.wanted_info``: parameters, spec, generator
version), whether or not it is generated yet: the identity a sweep plans before generating the set is the identity
its runs record after. Data that cannot be read is fingerprinted by the error (the run itself then fails with it).

Cheap: one parse of the annotations and one stat per clip, cached per data config in the process and re-used while
the sources' size and mtime are unchanged (a sweep computes it for every cell at plan time).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fusionbench.errors import UserError

_cache: dict[str, tuple[list[tuple[str, int, int]], str]] = {}  # data config → (sources' stats, fingerprint)


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
        return str(path), st.st_size, st.st_mtime_ns
    except OSError:
        return str(path), -1, -1


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_fingerprint(data_cfg: DictConfig) -> str:
    """16 hex digits naming the data a config trains on (see the module docstring)."""
    from fusionbench.data.datasets import records_for
    from fusionbench.data.datasets.synth import synth_request, wanted_info
    from fusionbench.data.manifest import file_hash, media_fingerprint

    if data_cfg.dataset == "synth" and not data_cfg.manifest:
        try:
            info = {k: v for k, v in wanted_info(synth_request(data_cfg)).items() if k not in ("av", "libavcodec")}
            return _digest({"generator": info, "on_error": data_cfg.on_error})
        except UserError as exc:
            return _digest({"unreadable": str(exc), "on_error": data_cfg.on_error})
    key = json.dumps(OmegaConf.to_container(data_cfg, resolve=True), sort_keys=True, default=str)
    cached = _cache.get(key)
    if cached is not None and all(_stat(Path(p)) == (p, size, mtime) for p, size, mtime in cached[0]):
        return cached[1]
    try:
        records = records_for(data_cfg)
    except UserError as exc:
        return _digest({"unreadable": str(exc), "on_error": data_cfg.on_error})
    stats = [_stat(p) for p in records.sources]
    fingerprint = _digest({
        "sources": [file_hash(p) for p in records.sources],
        "media": media_fingerprint(c.path for c in records.clips),
        "on_error": data_cfg.on_error,
    })
    _cache[key] = (stats, fingerprint)
    return fingerprint


def identity_hash(cfg: DictConfig) -> str:
    """A run's config-hash part of its identity: the config hash and the data fingerprint together (12 hex)."""
    from fusionbench.config import config_hash

    return hashlib.sha256(f"{config_hash(cfg)}\0{data_fingerprint(cfg.data)}".encode()).hexdigest()[:12]
