"""The leaderboard set is written atomically: a writer SIGKILLed at any step leaves the previous complete set or the
new complete set (after ``atomic.recover``, which every writer and reader runs first), never a mix, an empty file
or a stale plot; a fresh write removes the plots the new set lacks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusionbench.reports import atomic

OLD = {"runs.csv": b"a,b\n1,2\n", "leaderboard.md": b"# old\n", "pareto_x.png": b"old x",
       "pareto_gone.png": b"a dataset that is gone"}
NEW = {"runs.csv": b"a,b\n3,4\n5,6\n", "leaderboard.md": b"# new\n", "pareto_x.png": b"new x",
       "robustness_y.png": b"new y"}

# The child counts every step that changes the disk (a file written, renamed, replaced or deleted) and, at step
# KILL_AT, announces it and waits to be killed: the parent SIGKILLs it there.
CHILD = r"""
import os, pathlib, shutil, sys, time
from fusionbench.reports import atomic
folder, marker, kill_at, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), eval(sys.argv[4])
count = 0
def step(fn):
    def wrapped(*args, **kwargs):
        global count
        count += 1
        if count == kill_at:
            pathlib.Path(marker).write_text(str(count))
            time.sleep(60)
        return fn(*args, **kwargs)
    return wrapped
atomic._write = step(atomic._write)
os.replace, os.rename = step(os.replace), step(os.rename)
pathlib.Path.unlink = step(pathlib.Path.unlink)
shutil.rmtree = step(shutil.rmtree)
atomic.write_set(folder, files, owned=["pareto_*.png", "robustness_*.png"])
pathlib.Path(marker).write_text("done %d" % count)
"""


def visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def run_child(folder: Path, kill_at: int) -> str:
    marker = folder.parent / f"marker-{kill_at}"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(marker), str(kill_at), repr(NEW)],
                            cwd=Path(__file__).resolve().parents[1])
    # a guard against a hung child only: on a loaded CI box each step's fsync can take seconds
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    text = marker.read_text() if marker.exists() else ""
    if not text.startswith("done"):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert text, f"child exited {proc.returncode} before step {kill_at}"
    return text


def old_set(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_set(folder, OLD)


def test_a_kill_at_any_step_leaves_one_complete_set(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    old_set(probe)
    steps = int(run_child(probe, kill_at=10**6).split()[1])  # a full write: how many steps it takes
    assert visible(probe) == NEW and atomic.read_set(probe)["files"].keys() == NEW.keys()
    assert steps >= 2 * len(NEW) + 3
    outcomes = []
    for k in range(1, steps + 1):
        folder = tmp_path / f"k{k}"
        old_set(folder)
        before = atomic.read_manifest(folder)["generation"]
        run_child(folder, kill_at=k)
        seen = visible(folder)
        assert all(seen.values()), f"step {k}: an empty file in {sorted(seen)}"
        manifest = atomic.read_set(folder)  # recovers, then checks every file against the manifest
        after = visible(folder)
        assert after in (OLD, NEW), f"killed at step {k}: a mix {sorted(after)}"
        assert set(after) == set(manifest["files"])
        assert not [p.name for p in folder.iterdir() if p.is_dir()], f"step {k}: render/staging dir left"
        outcomes.append("new" if after == NEW else "old")
        if after == OLD:
            assert manifest["generation"] == before
    # the kills fell both before the commit point (old set kept) and after it (rolled forward to the new set)
    assert "old" in outcomes and "new" in outcomes, outcomes
    assert outcomes == sorted(outcomes, key=["old", "new"].index), outcomes  # one commit point


def test_stale_plots_are_removed_and_a_mix_is_detected(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "pareto_legacy.png").write_bytes(b"from a set written before manifests")
    (folder / "notes.txt").write_bytes(b"not ours")
    atomic.write_set(folder, OLD, owned=["pareto_*.png"])
    assert not (folder / "pareto_legacy.png").exists() and (folder / "notes.txt").exists()
    atomic.write_set(folder, NEW, owned=["pareto_*.png"])
    assert not (folder / "pareto_gone.png").exists()  # in the previous manifest, not in the new set
    assert visible(folder) == {**NEW, "notes.txt": b"not ours"}
    (folder / "runs.csv").write_bytes(b"a,b\n1,2\n")  # someone else's write: the set is no longer consistent
    with pytest.raises(atomic.InconsistentSet, match="runs.csv"):
        atomic.read_set(folder)
    manifest = json.loads((folder / atomic.MANIFEST).read_text())
    assert set(manifest["files"]) == set(NEW)
