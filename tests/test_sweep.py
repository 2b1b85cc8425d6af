"""sweep: grid expansion, up-front validation, worker processes on a real sqlite store, crash handling, resume."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fusionbench import sweep, tracking
from fusionbench.config import PROJECT_ROOT, ConfigError
from sweep_runners import expected_top1, fresh_store

TESTS = Path(__file__).resolve().parent
RUNNER = "sweep_runners:run"


def _store_args(store: Path, experiment: str = "sw") -> list[str]:
    return [f"tracking.store={store}", f"tracking.experiment={experiment}"]


def _statuses(store: Path, experiment: str = "sw") -> Counter:
    return Counter(tracking.runs_frame(store, experiment)["status"])


# ------------------------------------------------------------------------------------------------------ the grid


def test_expand_grid_lists_ranges_and_cartesian_product() -> None:
    cells = sweep.expand_grid(["fusion=late,mbt", "seed=0:3", "train.lr=1e-3", "eval.conditions=[av,audio_only]"])
    assert len(cells) == 2 * 3
    assert cells[0] == ["fusion=late", "seed=0", "train.lr=1e-3", "eval.conditions=[av,audio_only]"]
    assert cells[-1] == ["fusion=mbt", "seed=2", "train.lr=1e-3", "eval.conditions=[av,audio_only]"]
    assert len(sweep.expand_grid(["a=1,2", "b=0:3", "c=x,y,z,w"])) == 24
    assert sweep.expand_grid([]) == [[]]


@pytest.mark.parametrize("value, expected", [
    ("0:3", ["0", "1", "2"]),
    ("0:7:3", ["0", "3", "6"]),
    ("3:0:-1", ["3", "2", "1"]),
    ("0:2,10", ["0", "1", "10"]),
    ("[av,audio_only]", ["[av,audio_only]"]),
    ("[a,b],[c]", ["[a,b]", "[c]"]),
    ("{x: 1, y: [2,3]}", ["{x: 1, y: [2,3]}"]),
    ("'a,b',c", ["'a,b'", "c"]),
    ("sleep=0.5", ["sleep=0.5"]),
    ("0.5:1", ["0.5:1"]),  # not an integer range: passed through
    ("", [""]),
])
def test_expand_value(value: str, expected: list[str]) -> None:
    assert sweep.expand_value(value) == expected


@pytest.mark.parametrize("bad", ["seed=3:0", "seed=0:3:0", "fusion=late,", "seed"])
def test_expand_grid_rejects_bad_items(bad: str) -> None:
    with pytest.raises(ConfigError):
        sweep.expand_grid([bad])


def test_plan_validates_every_cell_and_collapses_duplicates(tmp_path: Path) -> None:
    store = tmp_path / "never" / "mlflow.db"
    cells = sweep.plan(sweep.expand_grid(["seed=0,1,0", *_store_args(store)]))
    assert [c.identity.seed for c in cells] == [0, 1]
    with pytest.raises(ConfigError, match=r"cell 2/2 .*fusion=lat\b.*unknown fusion 'lat'; valid: .*late"):
        sweep.plan(sweep.expand_grid(["fusion=late,lat", *_store_args(store)]))


def test_a_typo_fails_the_whole_sweep_before_any_run(tmp_path: Path) -> None:
    store = tmp_path / "results" / "mlflow.db"
    with pytest.raises(ConfigError, match=r"cell 1/4 .*unknown config key 'train.lrr'.*valid keys under 'train': "
                                          r"max_epochs, .*\blr\b"):
        sweep.run_sweep(["seed=0:4", "train.lrr=0.1", *_store_args(store)], runner=RUNNER)
    assert not store.exists()  # no store, no run, no worker
    with pytest.raises(ConfigError, match="not 'module:function'|runner"):
        sweep.run_sweep(["seed=0", *_store_args(store)], runner="sweep_runners.run")


# --------------------------------------------------------------------------------------------- running sweeps


def test_two_workers_share_one_store_and_a_rerun_skips_everything(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    lines: list[str] = []
    grid = ["seed=0:8", "eval.conditions=[av,audio_snr_-5,video_noise_0.5]", "data.manifest=rendezvous=2",
            *_store_args(store)]
    report = sweep.run_sweep(grid, workers=2, runner=RUNNER, log=lines.append)
    assert report.ok and len(report.finished) == 8 and not report.skipped
    runs = tracking.runs_frame(store, "sw")
    assert len(runs) == 8 and set(runs["status"]) == {"FINISHED"}
    assert set(runs["run_id"]) == {o.run_id for o in report.finished}
    assert runs["tags.fb.identity"].is_unique
    assert sorted(runs["metrics.test/audio_snr_-5/top1"]) == pytest.approx(
        sorted(expected_top1(c.cfg, "audio_snr_-5") for c in sweep.plan(sweep.expand_grid(grid))))
    starts = [line for line in lines if "] start " in line]
    ends = [line for line in lines if "] finished " in line]
    assert len(starts) == len(ends) == 8 and all("ETA" in line and "elapsed" in line for line in ends)
    assert len({line.split("pid ")[1] for line in starts}) == 2  # both workers ran cells

    again = sweep.run_sweep(grid, workers=2, runner=RUNNER, log=lines.append)
    assert len(again.skipped) == 8 and not again.finished
    assert len(tracking.runs_frame(store, "sw")) == 8


def test_failed_and_crashed_cells_are_recorded_and_retried_alone(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    # a normal cell, a hard crash (os._exit: the worker dies; a fresh one takes the next cell), an exception, another
    grid = ["data.manifest=sleep=0,exit_once,raise_once,sleep=0.01", *_store_args(store)]
    report = sweep.run_sweep(grid, workers=1, runner=RUNNER, log=lambda line: None)
    assert [o.status for o in report.outcomes] == ["finished", "failed", "failed", "finished"] and not report.ok
    crashed, raised = report.failed
    assert crashed.error == "worker process died (exit code 3) while running this cell"
    assert raised.error == "RuntimeError: planned failure in seed 0"
    runs = tracking.runs_frame(store, "sw").set_index("params.data.manifest")
    assert list(runs["status"].sort_index()) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert runs.loc["exit_once", "tags.fb.error"] == crashed.error
    assert runs.loc["raise_once", "tags.fb.error"] == raised.error
    assert "FAILED" in report.summary() and "planned failure" in report.summary()
    finished_before = set(runs.loc[runs["status"] == "FINISHED", "run_id"])

    again = sweep.run_sweep(grid, workers=1, runner=RUNNER, log=lambda line: None)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped", "finished", "finished"] and again.ok
    assert {o.label for o in again.finished} == {crashed.label, raised.label}  # only the two failed cells ran again
    runs = tracking.runs_frame(store, "sw")
    assert _statuses(store) == {"FINISHED": 4, "FAILED": 2}
    assert finished_before <= set(runs.loc[runs["status"] == "FINISHED", "run_id"])


def test_in_process_mode_runs_cells_here(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    report = sweep.run_sweep(["seed=0:2", "data.manifest=sleep=0,raise", *_store_args(store)], workers=0,
                             runner=RUNNER, log=lambda line: None)
    assert len(report.finished) == 2 and len(report.failed) == 2
    assert _statuses(store) == {"FINISHED": 2, "FAILED": 2}


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _start_sweep(grid: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(PROJECT_ROOT)])}
    return subprocess.Popen([sys.executable, "-m", "fusionbench.sweep", *grid, "--runner", RUNNER, "-w", "1"],
                            cwd=PROJECT_ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: killpg reaches its workers too


def _kill_after_finished(proc: subprocess.Popen, store: Path, count: int, log: Path, group: bool) -> None:
    try:
        _wait_for(lambda: store.exists() and len(tracking.finished_identities(store, "sw")) >= count, 120,
                  f"{count} finished cells; log: {log.read_text()[-2000:]}")
        (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _no_lock_held(store: Path) -> bool:
    return not any(tracking.lock_is_held(store, "sw", k) for k in tracking.runs_frame(store, "sw")["tags.fb.identity"])


def test_resume_after_the_sweep_process_is_sigkilled(tmp_path: Path) -> None:
    store, log = fresh_store(tmp_path / "results"), tmp_path / "sweep.log"
    grid = ["seed=0:6", "data.manifest=sleep=0.6", *_store_args(store)]

    # 1. SIGKILL the sweep process alone: its worker notices, marks its run KILLED and exits (no orphan training).
    _kill_after_finished(_start_sweep(grid, log), store, 2, log, group=False)
    workers = {int(pid) for pid in re.findall(r"pid (\d+)\)", log.read_text())}
    assert workers
    _wait_for(lambda: not any(_alive(pid) for pid in workers), 30, "the orphaned worker to exit")
    assert _statuses(store)["RUNNING"] == 0 and _statuses(store)["KILLED"] <= 1 and _no_lock_held(store)

    # 2. SIGKILL the sweep and its workers at once (kill -9 of the process group): a RUNNING run stays behind.
    _kill_after_finished(_start_sweep(grid, log), store, 3, log, group=True)
    runs = tracking.runs_frame(store, "sw")
    finished_before = set(runs.loc[runs["status"] == "FINISHED", "run_id"])
    running = set(runs.loc[runs["status"] == "RUNNING", "run_id"])
    killed_before = _statuses(store)["KILLED"]
    assert 3 <= len(finished_before) < 6 and len(running) <= 1 and _no_lock_held(store)

    # 3. Restart: the dead RUNNING run is marked KILLED, finished cells are skipped, only the rest run.
    report = sweep.run_sweep(grid, workers=1, runner=RUNNER, log=lambda line: None)
    assert set(report.reaped) == running
    assert len(report.skipped) == len(finished_before)
    assert len(report.finished) == 6 - len(finished_before) and report.ok
    after = tracking.runs_frame(store, "sw")
    assert finished_before <= set(after.loc[after["status"] == "FINISHED", "run_id"])  # nothing finished was lost
    assert _statuses(store) == +Counter({"FINISHED": 6, "KILLED": killed_before + len(running)})
    assert after.loc[after["status"] == "FINISHED", "tags.fb.identity"].is_unique


@pytest.mark.slow
def test_two_concurrent_sweeps_on_one_store_run_each_cell_once(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    grid = ["seed=0:6", "data.manifest=sleep=0.3", *_store_args(store)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(PROJECT_ROOT)])}
    procs = [subprocess.Popen([sys.executable, "-m", "fusionbench.sweep", *grid, "--runner", RUNNER, "-w", "1"],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = tracking.runs_frame(store, "sw")
    assert Counter(runs["status"]) == {"FINISHED": 6}  # every cell exactly once, nothing lost
    assert runs["tags.fb.identity"].is_unique


def test_spawn_workers_work_too(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    report = sweep.run_sweep(["data.manifest=sleep=0,exit", *_store_args(store)], workers=1, runner=RUNNER,
                             log=lambda line: None, start_method="spawn")
    assert [o.status for o in report.outcomes] == ["finished", "failed"]
    assert _statuses(store) == {"FINISHED": 1, "FAILED": 1}


def test_a_list_of_grids_sweeps_their_union(tmp_path):
    """``sweep:`` as a list of blocks: each block is crossed on its own, the cells are their union, and a
    command-line key replaces the file's key in every block."""
    from fusionbench.cli import grid_from_experiment

    path = tmp_path / "two_blocks.yaml"
    path.write_text(
        "sweep:\n"
        "  - {data.task: [joint], fusion: [late, mbt]}\n"
        "  - {data.task: [modsum], train.max_epochs: [3], fusion: [late]}\n"
    )
    grids = grid_from_experiment(str(path), ["seed=0,1"])
    cells = sweep.expand_grids(grids)
    assert len(cells) == 2 * 2 + 1 * 2
    assert ["data.task=modsum", "train.max_epochs=3", "fusion=late", "seed=1"] in cells
    assert all("seed=" in " ".join(c) for c in cells)
    assert grid_from_experiment(str(path), ["fusion=early"])[0] == ["data.task=joint", "fusion=early"]
    assert sweep.expand_grids(["fusion=late,mbt"]) == sweep.expand_grid(["fusion=late,mbt"])
