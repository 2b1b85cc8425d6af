"""Write a set of files into a folder so that readers only ever see one complete set.

fusionbench's protocol (a redo log; ``os.replace`` is atomic per file, not per set):

1. render every file into a fresh ``.leaderboard-render-<pid>-<id>/`` inside the folder, fsynced, with the set's
   manifest (``.leaderboard-set.json``: generation id, every file's size and sha256) and the list of the previous
   set's files that the new set drops (``stale.json``);
2. under an exclusive ``flock`` on the folder, rename that render dir to ``.leaderboard-staging/`` — the commit
   point: a staging dir is always complete;
3. ``os.replace`` each file into the folder, then the manifest, then delete the stale files, then the staging dir.

A kill before step 2 leaves the previous set untouched (and a render dir that the next writer removes); a kill after
it leaves a staging dir that :func:`recover` — run by every writer and reader before anything else — rolls forward
to the new set. So after :func:`recover` the folder holds exactly the files of the manifest, each as the manifest
says: :func:`read_set` checks it. No file is ever visible half-written (each is replaced whole).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterable, Iterator

MANIFEST = ".leaderboard-set.json"
STAGING = ".leaderboard-staging"
RENDER_PREFIX = ".leaderboard-render-"
STALE = "stale.json"


class InconsistentSet(RuntimeError):
    """The folder's files do not match its manifest (only possible if something else wrote there)."""


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on the folder itself (no lock file left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _roll_forward(folder: Path) -> None:
    """Finish a committed swap (idempotent: each step checks what is left to do). Call under the lock."""
    staging = folder / STAGING
    if not staging.is_dir():
        return
    manifest = json.loads((staging / MANIFEST).read_text()) if (staging / MANIFEST).exists() else None
    if manifest is not None:  # the manifest is moved last: while it is in staging, files may still be there
        for name in manifest["files"]:
            if (staging / name).exists():
                os.replace(staging / name, folder / name)
        os.replace(staging / MANIFEST, folder / MANIFEST)
        _fsync_dir(folder)
    if (staging / STALE).exists():
        for name in json.loads((staging / STALE).read_text()):
            (folder / name).unlink(missing_ok=True)
    shutil.rmtree(staging)


def recover(folder: str | Path) -> None:
    """Roll a committed but unfinished swap forward; remove render dirs of writers that died. Takes the lock."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    with folder_lock(folder):
        _roll_forward(folder)
        for render in folder.glob(f"{RENDER_PREFIX}*"):
            pid = render.name.removeprefix(RENDER_PREFIX).split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(render, ignore_errors=True)


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def read_set(folder: str | Path) -> dict:
    """The folder's manifest after :func:`recover`, checked: every listed file exists with its size and sha256.

    Raises :class:`InconsistentSet` otherwise, FileNotFoundError if the folder has no set yet."""
    recover(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder}: no {MANIFEST} (no leaderboard written here yet)")
    for name, meta in manifest["files"].items():
        path = Path(folder) / name
        if not path.is_file():
            raise InconsistentSet(f"{path}: listed in {MANIFEST} (generation {manifest['generation']}) but missing")
        data = path.read_bytes()
        if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise InconsistentSet(f"{path}: not the file of generation {manifest['generation']}")
    return manifest


def write_set(folder: str | Path, files: dict[str, bytes], owned: Iterable[str] = ()) -> dict:
    """Replace the folder's previous set with ``files`` ({name: content}, names without folders) as one set.

    Stale files are deleted: those of the previous manifest that the new set lacks, and any file matching one of the
    ``owned`` glob patterns (e.g. ``pareto_*.png``) that the new set lacks (sets written before manifests existed).
    Returns the new manifest.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover(folder)
    for name in files:
        if "/" in name or name.startswith(".") or name in (MANIFEST, STAGING):
            raise ValueError(f"{name!r}: a set's file names are plain, visible names")
    generation = uuid.uuid4().hex[:12]
    render = folder / f"{RENDER_PREFIX}{os.getpid()}-{generation}"
    render.mkdir()
    try:
        for name, data in files.items():
            _write(render / name, data)
        manifest = {
            "generation": generation,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                      for name, data in sorted(files.items())},
        }
        _write(render / MANIFEST, json.dumps(manifest, indent=1).encode())
        with folder_lock(folder):
            _roll_forward(folder)  # another writer's committed swap, killed since our recover()
            previous = read_manifest(folder) or {"files": {}}
            patterns = list(owned)
            stale = sorted({n for n in previous["files"] if n not in files}
                           | {p.name for p in folder.iterdir() if p.is_file() and p.name not in files
                              and any(fnmatch(p.name, pat) for pat in patterns)})
            _write(render / STALE, json.dumps(stale).encode())
            _fsync_dir(render)
            os.rename(render, folder / STAGING)  # the commit point
            _fsync_dir(folder)
            _roll_forward(folder)
    finally:
        if render.exists():
            shutil.rmtree(render, ignore_errors=True)
    return manifest
