"""The embedded synthetic sets as a reader: generate the set if it is missing or stale, then read its ``clips.csv``.

- The set for a data config is ``<root>/<task>`` for the default generator parameters, else
  ``<root>/<task>-<hash of them>`` (``set_dir``): a variant never overwrites another, so runs with different data
  settings can share ``root`` concurrently. fusionbench's rule: it is generated on the model's grid (T frames over
  clip_seconds, size, sample rate, from ``data.video`` / ``data.audio`` / ``data.clip_seconds``) and ``data.synth``,
  so a flash lands on exactly one input frame.
- Missing, or stale (its ``generator.json`` records other parameters, spec or generator version) → generated, under
  the set's lock (``set_lock``), so concurrent runs generate it once and the others wait. A ``clips.csv`` without a
  ``generator.json`` is not ours to overwrite.
- With ``manifest`` (``data.manifest``), that CSV is read as it is (a set written by ``fusionbench data synth``).
- Every clip has its own ``split`` (the generator's exact fractions, ``data.synth.val_frac`` / ``test_frac``), so
  splits are final (never carved); class names are the task's (an explicit list); ``group`` = the clip's file.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from fusionbench.data import synthetic
from fusionbench.data.datasets.base import DatasetRecords
from fusionbench.data.manifest import Clip, read_manifest
from fusionbench.errors import UserError

log = logging.getLogger(__name__)

_held: dict[Path, int] = {}  # lock path → depth: re-entrant within a process (a second flock fd would deadlock)


@contextmanager
def set_lock(set_dir: Path) -> Iterator[None]:
    """Exclusive lock on one generated set (``<root>/.<set>.lock``, next to the folder, which may not exist yet)."""
    set_dir = Path(set_dir).resolve()
    path = set_dir.parent / f".{set_dir.name}.lock"
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
    finally:
        os.close(fd)  # drops the flock


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def synth_request(cfg: DictConfig) -> dict[str, Any]:
    """The ``synthetic.generate`` arguments a data config asks for (the set is generated on the model's grid).

    A noise setting left at None takes the task's own (``synthetic.TASKS``), so each task keeps its tuned noise.
    ``drop_mode`` / ``drop_splits`` are part of the request only where ``drop_p`` > 0, so a clean set keeps its folder
    name (``set_dir``) and its record.
    """
    request = dict(
        task=cfg.task, n=int(cfg.synth.num_clips), seed=int(cfg.synth.seed),
        video_noise=_float_or_none(cfg.synth.video_noise), audio_snr_db=_float_or_none(cfg.synth.audio_snr_db),
        drop_p=float(cfg.synth.drop_p), val_frac=float(cfg.synth.val_frac), test_frac=float(cfg.synth.test_frac),
        num_frames=int(cfg.video.num_frames), size=int(cfg.video.size),
        fps=int(cfg.video.num_frames) / float(cfg.clip_seconds), sample_rate=int(cfg.audio.sample_rate),
        clip_seconds=float(cfg.clip_seconds),
    )
    if request["drop_p"]:
        request.update(drop_mode=str(cfg.synth.drop_mode), drop_splits=list(cfg.synth.drop_splits))
    return request


def _spec(task: str) -> synthetic.TaskSpec:
    if task not in synthetic.TASKS:
        raise UserError(f"unknown synthetic task {task!r}; valid: {', '.join(synthetic.TASKS)}", where="data.task")
    return synthetic.TASKS[task]


def set_dir(root: Path, request: dict[str, Any]) -> Path:
    """``<root>/<task>``, or ``<root>/<task>-<hash>`` for a request other than the task's defaults."""
    from fusionbench.config import DataConfig

    task = request["task"]
    name = task
    if request != synth_request(OmegaConf.merge(OmegaConf.structured(DataConfig), {"task": task})):
        name += "-" + hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:8]
    return Path(root) / name


def set_dir_for(data_cfg: DictConfig) -> Path:
    """The generated set a data config trains on (``data.root`` relative to the project root)."""
    from fusionbench.config import project_path

    return set_dir(project_path(str(data_cfg.root)), synth_request(data_cfg))


def wanted_info(request: dict[str, Any]) -> dict[str, Any]:
    """What ``generator.json`` must say for a set to match ``request`` (also the run identity of a planned set)."""
    spec = _spec(request["task"])
    params = synthetic.render_params(
        spec, **{k: request[k] for k in ("video_noise", "audio_snr_db", "num_frames", "size", "fps",
                                         "sample_rate", "clip_seconds")}
    )
    drops = {k: request[k] for k in ("drop_mode", "drop_splits") if k in request}
    info = synthetic.generator_info(spec, request["n"], request["seed"], params, request["drop_p"],
                                    request["val_frac"], request["test_frac"], **drops)
    return json.loads(json.dumps(info))  # tuples → lists, as read back from generator.json


def ensure(out: Path, request: dict[str, Any], workers: int = 1) -> Path:
    """Generate the set in ``out`` unless it is there and matches ``request`` (under its lock); its clips.csv."""
    manifest = out / "clips.csv"
    with set_lock(out):
        wanted = wanted_info(request)
        info_path = out / "generator.json"
        if manifest.is_file() and info_path.is_file():
            have = json.loads(info_path.read_text())
            if all(have.get(k) == v for k, v in wanted.items() if k not in ("av", "libavcodec")):
                return manifest
            log.warning("synthetic set %s was generated by another generator version or spec: regenerating", out)
        elif manifest.is_file():
            return manifest  # a manifest without generator.json: not ours to overwrite
        log.info("generating the synthetic %s set (%d clips) in %s", request["task"], request["n"], out)
        synthetic.generate(out=out, workers=workers, **request)
    return manifest


def read(root: Path, task: str = "joint", manifest: str = "", request: dict[str, Any] | None = None,
         workers: int = 1) -> DatasetRecords:
    """The synthetic set of ``request`` under ``root`` (generated if needed), or the CSV ``manifest`` as it is."""
    spec = _spec(task)
    if manifest:
        csv_path = Path(manifest)
    else:
        if request is None:
            raise UserError("no generator request (set data.synth)", where="data.synth")
        csv_path = ensure(set_dir(root, request), request, workers)
    clips, _ = read_manifest(csv_path, root=csv_path.parent)
    sources = [csv_path]
    if (csv_path.parent / "generator.json").is_file():
        sources.append(csv_path.parent / "generator.json")
    out = [Clip(c.path, c.labels, c.split, c.start_s, c.end_s,
                {**c.extras, "group": c.path.name, "line": line, "source": str(csv_path)})
           for line, c in enumerate(clips, start=2)]
    for clip in out:
        if any(not 0 <= i < spec.num_classes for i in clip.labels):
            raise UserError(f"label {list(clip.labels)} outside the {spec.num_classes} classes of {task}",
                            where=f"{csv_path}, line {clip.extras['line']}")
    return DatasetRecords(out, list(spec.class_names), False, [], sources, explicit_classes=True, fixed_splits=True)
