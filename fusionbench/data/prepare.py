"""Prepare synthetic sets once, before the runs that use them, and keep each set's leak probe next to it.

Every synthetic task has a stated unimodal ceiling (reference/synthetic-tasks.md): a simple model on one modality
alone must not beat it, or the task's known answer can come from a generator bug instead of fusion. So:

- :func:`prepare_cells` (the sweep parent, before it fans out to workers): for each distinct generated set among
  the configs, generate it if it is missing or stale (``datasets.synth.ensure``) and probe it once; one
  line per set. Two processes never write one set at once (a file lock per set, ``<root>/.<set>.lock``).
- :func:`cached_leak_probe`: :func:`fusionbench.data.leak_probe.leak_probe` of a generated set, cached in
  ``<set>/leak_probe.json``; recomputed when ``generator.json``, ``clips.csv``, the probe's code or ``max_clips``
  change (the file records their hashes).
- :func:`log_leak_probe` (``fusionbench.train.run``): the cached probe as metrics of the run,
  ``data/leak_probe/{audio,video,ceiling,chance,tolerance,n_test,leak}`` (``leak``: how many modalities beat
  ceiling + tolerance), and tags ``fb.leak_probe`` (ok | leak | unavailable | failed), ``fb.leak_probe.leak``
  (``none`` or the leaking modalities), ``fb.leak_probe.set`` (the set's folder name), ``fb.leak_probe.error``.

The leaderboard (``fusionbench/reports/``) shows the probe per dataset and flags a leak.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fusionbench.config import PROJECT_ROOT, dataset_name, project_path
from fusionbench.data.datasets import synth
from fusionbench.data.datasets.synth import set_lock  # noqa: F401  (one lock per generated set; re-exported)
from fusionbench.data.manifest import file_hash
from fusionbench.data.synthetic import atomic_write_text

PROBE_FILE = "leak_probe.json"
PROBE_MAX_CLIPS = 3000  # the probe reads the first clips of a larger set (3000 clips: ~20 s on 2 cores)
METRIC_PREFIX = "data/leak_probe/"
METRIC_KEYS = ("audio", "video", "ceiling", "chance", "tolerance", "n_test")


# ------------------------------------------------------------------------------------------------ the probe


@dataclass
class ProbeRecord:
    """A set's probe result (``leak_probe``'s dict), where it is cached, and whether this call computed it."""

    result: dict[str, Any]
    path: Path
    cached: bool  # True: read from ``path``; False: computed (and written) by this call
    seconds: float  # how long the probe took when it was computed

    @property
    def leak(self) -> list[str]:
        return list(self.result.get("leak", []))

    def summary(self) -> str:
        r = self.result
        text = (f"audio {r['audio']:.3f}, video {r['video']:.3f} vs ceiling {r['ceiling']:.3f} "
                f"(+{r['tolerance']:.3f} tolerance; chance {r['chance']:.3f}; {r['n_test']} test clips)")
        if self.leak:
            over = ", ".join(f"{m} alone {r[m]:.3f} > {r['ceiling'] + r['tolerance']:.3f}" for m in self.leak)
            return f"{text} — ⚠ LEAK: {over}"
        return f"{text} — ok"


def probe_key(set_dir: str | Path, max_clips: int | None = PROBE_MAX_CLIPS) -> dict[str, Any]:
    """What a cached probe result depends on: the set's generator.json and clips.csv, the probe's code, max_clips."""
    from fusionbench.data import leak_probe

    set_dir = Path(set_dir)
    return {
        "generator_sha256": file_hash(set_dir / "generator.json"),
        "manifest_sha256": file_hash(set_dir / "clips.csv"),
        "probe_sha256": file_hash(Path(leak_probe.__file__)),
        "max_clips": max_clips,
    }


def read_cached_probe(set_dir: str | Path, max_clips: int | None = PROBE_MAX_CLIPS) -> ProbeRecord | None:
    """The cached probe of a set if it is still valid for the set as it is now; None otherwise."""
    path = Path(set_dir) / PROBE_FILE
    try:
        saved = json.loads(path.read_text())
        key = probe_key(set_dir, max_clips)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("result"), dict):
        return None
    return ProbeRecord(saved["result"], path, True, float(saved.get("seconds", 0.0)))


def cached_leak_probe(set_dir: str | Path, *, max_clips: int | None = PROBE_MAX_CLIPS, workers: int = 2,
                      refresh: bool = False) -> ProbeRecord:
    """The leak probe of a generated set (a folder with ``generator.json`` and ``clips.csv``), computed once.

    The first call fits the probe and writes ``<set_dir>/leak_probe.json``; later calls read it while the set, the
    probe's code and ``max_clips`` are unchanged (see :func:`probe_key`). ``refresh`` recomputes it anyway.
    Raises ImportError without scikit-learn (the ``dev`` extra) and whatever the probe raises.
    """
    set_dir = Path(set_dir)
    with set_lock(set_dir):
        record = None if refresh else read_cached_probe(set_dir, max_clips)
        if record is not None:
            return record
        from fusionbench.data.leak_probe import leak_probe

        key = probe_key(set_dir, max_clips)
        start = time.perf_counter()
        result = leak_probe(set_dir, max_clips=max_clips, workers=workers)
        seconds = time.perf_counter() - start
        saved = {"key": key, "result": result, "seconds": round(seconds, 3),
                 "computed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        path = set_dir / PROBE_FILE
        atomic_write_text(path, json.dumps(saved, indent=2, sort_keys=True) + "\n")
        return ProbeRecord(result, path, False, seconds)


# ---------------------------------------------------------------------------------------------- the sets


def generated_set_dir(data_cfg: DictConfig) -> Path | None:
    """The folder of the generated synthetic set a data config trains on; None for anything else.

    ``dataset=synth`` without ``manifest``: ``datasets.synth.set_dir_for`` (generated on first use). With a
    ``manifest``: its folder if that holds a ``generator.json`` (a set written by ``fusionbench data synth``).
    """
    if data_cfg.dataset != "synth":
        return None
    if data_cfg.manifest:
        path = project_path(str(data_cfg.manifest))
        return path.parent if path.is_file() and (path.parent / "generator.json").is_file() else None
    return synth.set_dir_for(data_cfg)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _error_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _unavailable(exc: ImportError) -> str:
    return f"{_error_line(exc)} (the probe needs scikit-learn: pip install -e '.[dev]')"


@dataclass
class PreparedSet:
    """One set made ready by :func:`prepare_dataset`."""

    dataset: str  # the leaderboard's dataset name, e.g. synth-joint
    set_dir: Path
    clips: int | None
    generated: bool  # generated (or regenerated) by this call
    seconds: float  # generation time
    probe: ProbeRecord | None = None
    probe_error: str | None = None  # why there is no probe

    def line(self) -> str:
        made = f"generated in {self.seconds:.1f} s" if self.generated else "ready"
        head = f"[data] {self.dataset}: {self.clips if self.clips is not None else '?'} clips in " \
               f"{_shown(self.set_dir)} ({made})"
        if self.probe is None:
            return f"{head} | leak probe {self.probe_error}"
        how = "cached" if self.probe.cached else f"{self.probe.seconds:.1f} s"
        return f"{head} | leak probe ({how}): {self.probe.summary()}"


def _workers(workers: int | None) -> int:
    """Decode/probe processes: the given number, or the machine's cores (at most 8)."""
    return max(1, min(8, os.cpu_count() or 1)) if workers is None else int(workers)


def prepare_dataset(cfg: DictConfig, *, workers: int | None = None, probe: bool = True) -> PreparedSet | None:
    """Generate ``cfg.data``'s synthetic set if needed and probe it (cached); None if it is not a generated set.

    Holds the set's lock throughout, so a concurrent sweep or ``fusionbench train`` waits instead of writing the
    same files. A probe that fails (or cannot run: no scikit-learn) is reported in ``probe_error``, not raised.
    """
    data = cfg.data
    set_dir = generated_set_dir(data)
    if set_dir is None:
        return None
    workers = _workers(workers)
    with set_lock(set_dir):
        generated, start = False, time.perf_counter()
        if not data.manifest:
            manifest = set_dir / "clips.csv"
            before = manifest.stat().st_mtime_ns if manifest.is_file() else None
            synth.ensure(set_dir, synth.synth_request(data), workers)
            generated = manifest.is_file() and manifest.stat().st_mtime_ns != before
        seconds = time.perf_counter() - start
        try:
            clips = int(json.loads((set_dir / "generator.json").read_text())["n"])
        except (OSError, ValueError, KeyError, TypeError):
            clips = None
        out = PreparedSet(dataset_name(cfg), set_dir, clips, generated, seconds)
        if not probe or not (set_dir / "generator.json").is_file():
            out.probe_error = "not run" if not probe else "not run (no generator.json: not a generated set)"
            return out
        try:
            out.probe = cached_leak_probe(set_dir, workers=workers)
        except ImportError as exc:
            out.probe_error = f"unavailable: {_unavailable(exc)}"
        except Exception as exc:
            out.probe_error = f"failed: {_error_line(exc)}"
        return out


def warm_cache(cfg: DictConfig, *, workers: int) -> None:
    """Decode a run config's data into the prepared store: every split and each corrupting test condition
    (``store.prepare_config``, what ``fusionbench data prepare`` runs).

    The sweep does this once per set before its workers start, with ``workers`` decode processes. Otherwise the first
    cells on a set each decode it themselves, one core each and at the same time (measured: +30 s on each of the
    first two cells of a 2,400-clip set). A no-op without a cache (``data.cache_dir: ""``).
    """
    if not cfg.data.cache_dir:
        return
    from fusionbench.data.store import prepare_config

    prepare_config(cfg, workers=workers, progress=False)


def prepare_cells(cfgs: Iterable[DictConfig], log: Callable[[str], None] = print, *, workers: int | None = None,
                  probe: bool = True) -> list[PreparedSet]:
    """Prepare every distinct generated set among full run configs once (the sweep does this before its workers):
    generate it, probe it, and warm the tensor cache for the first config that uses it (``warm_cache``).

    Logs one line per set. A set that cannot be prepared is logged and left to its runs (which then fail with the
    error recorded in MLflow); only an interruption propagates.
    """
    done: dict[Path, PreparedSet | None] = {}
    for cfg in cfgs:
        try:
            set_dir = generated_set_dir(cfg.data)
            if set_dir is None or set_dir.resolve() in done:
                continue
            done[set_dir.resolve()] = prepared = prepare_dataset(cfg, workers=workers, probe=probe)
        except Exception as exc:
            log(f"[data] {dataset_name(cfg)}: preparation failed: {_error_line(exc)}")
            continue
        if prepared is not None:
            log(prepared.line())
        try:
            warm_cache(cfg, workers=_workers(workers))
        except Exception as exc:  # the runs decode it themselves (and report what fails)
            log(f"[data] {dataset_name(cfg)}: cache warm-up failed: {_error_line(exc)}")
    return [p for p in done.values() if p is not None]


# ------------------------------------------------------------------------------------------------ the run


def probe_metrics(result: dict[str, Any]) -> dict[str, float]:
    """A probe result as MLflow metrics (names within MLflow's ``[A-Za-z0-9_/. -]``)."""
    out = {f"{METRIC_PREFIX}{k}": float(result[k]) for k in METRIC_KEYS if k in result}
    out[f"{METRIC_PREFIX}leak"] = float(len(result.get("leak", [])))
    return out


def log_leak_probe(tracked: Any, datamodule: Any, log: Callable[[str], None] = print) -> ProbeRecord | None:
    """Log the probe of the datamodule's generated synthetic set on a tracked run (``fusionbench.train.run``).

    Computes it on first use (a lone ``fusionbench train``), else reads the cached JSON. Nothing for datasets
    that are not generated sets, nor on a distributed rank ≥ 1 (rank 0 records the run). A probe that cannot run
    or fails is tagged (``fb.leak_probe`` = unavailable | failed, ``fb.leak_probe.error``), never fatal.
    """
    from fusionbench.tracking import NullRun

    if isinstance(tracked, NullRun) or datamodule.cfg.dataset != "synth":
        return None
    set_dir = datamodule.manifest_path.parent
    if not (set_dir / "generator.json").is_file():
        return None  # a hand-made manifest: no generator to check
    tags: dict[str, Any] = {"fb.leak_probe.set": set_dir.name}
    try:
        record = cached_leak_probe(set_dir, workers=getattr(datamodule, "decode_workers", 2))
    except ImportError as exc:
        tracked.set_tags({**tags, "fb.leak_probe": "unavailable", "fb.leak_probe.error": _unavailable(exc)})
        log(f"leak probe unavailable: {_unavailable(exc)}")
        return None
    except Exception as exc:
        tracked.set_tags({**tags, "fb.leak_probe": "failed", "fb.leak_probe.error": _error_line(exc)})
        log(f"leak probe failed: {_error_line(exc)}")
        return None
    tracked.log_metrics(probe_metrics(record.result))
    tracked.set_tags({**tags, "fb.leak_probe": "leak" if record.leak else "ok",
                      "fb.leak_probe.leak": ",".join(record.leak) or "none"})
    log(f"leak probe{' (cached)' if record.cached else ''}: {record.summary()}")
    return record
