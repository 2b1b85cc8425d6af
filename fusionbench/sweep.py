"""Sweeps: expand a grid of overrides, validate every cell up front, skip what finished, run the rest in workers.

Grid syntax, on any key: ``key=a,b,c`` (a list; commas inside ``[]``, ``{}``, ``()`` or quotes do not split, so
``eval.conditions=[av,audio_only]`` is one value) and integer ranges ``key=a:b`` / ``key=a:b:step`` with Python's
half-open semantics (``seed=0:3`` → 0, 1, 2); list items may be ranges (``seed=0:3,10``). The grid is the
cartesian product in the order the keys were given.

Execution: cells run in ``workers`` long-lived worker processes that run cell after cell. They are forked from a
``multiprocessing`` forkserver that imported the runner (torch, Lightning…) and MLflow once, so the import cost
(~10 s for Lightning here) is paid once per sweep, not per worker, per cell, or per crash (``start_method="spawn"``:
once per worker). A cell that raises is recorded FAILED by :func:`fusionbench.tracking.tracked_run` and the worker goes
on; a cell that kills its worker (segfault, OOM kill, ``os._exit``) is marked FAILED by the parent, which starts a
fresh worker. ``workers=0`` runs cells in this process (no crash isolation; handy under a debugger).
``launcher="slurm"`` (or ``"local"``, submitit's local executor) submits each cell as a job instead, with the same
rules (:mod:`fusionbench.slurm`).

Data: before the workers start, each distinct synthetic set among the cells to run is generated (if missing or
stale) and leak-probed once, here (:func:`fusionbench.data.prepare.prepare_cells`, one line per set).

Resume: a cell whose run identity has a FINISHED run is skipped. A cell whose identity diverged (its loss became NaN or
inf: ``fb.status=diverged``) is reported ``diverged`` and not run again: training is deterministic, so it would diverge
again (change its config, e.g. a lower lr, or delete that run to retry it). FAILED and KILLED cells run again. RUNNING runs whose identity lock nobody holds were
left by a dead process (a SIGKILLed sweep): they are marked KILLED at start and their cells run again. A cell whose
lock a live process holds (another sweep is running it) is reported ``busy`` and left alone.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import itertools
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fusionbench import slurm, tracking
from fusionbench.config import Config, ConfigError, load_config, to_dict
from fusionbench.data.prepare import prepare_cells
from fusionbench.errors import TrainingDiverged

DEFAULT_RUNNER = "fusionbench.train:run"
_RANGE = re.compile(r"^(-?\d+):(-?\d+)(?::(-?\d+))?$")
_PAIRS = {"[": "]", "{": "}", "(": ")"}


# ------------------------------------------------------------------------------------------------------- the grid


def split_top_level(value: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    parts, depth, quote, start = [], [], None, 0
    for i, ch in enumerate(value):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _PAIRS:
            depth.append(_PAIRS[ch])
        elif depth and ch == depth[-1]:
            depth.pop()
        elif ch == "," and not depth:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def expand_value(value: str) -> list[str]:
    """``"a,b"`` → ``["a", "b"]``; ``"0:3"`` → ``["0", "1", "2"]``; anything else → ``[value]``."""
    parts = split_top_level(value)
    if len(parts) > 1 and any(not p.strip() for p in parts):
        raise ConfigError(f"empty item in the sweep list {value!r}")
    out: list[str] = []
    for part in parts:
        match = _RANGE.match(part.strip())
        if not match:
            out.append(part)
            continue
        start, stop, step = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
        if step == 0:
            raise ConfigError(f"range {part!r} has step 0")
        values = list(range(start, stop, step))
        if not values:
            raise ConfigError(f"range {part!r} is empty (a:b is half-open, like Python's range)")
        out += [str(v) for v in values]
    return out


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """``["fusion=late,mbt", "seed=0:2"]`` → the cartesian product as override lists (first key varies slowest)."""
    axes = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        axes.append([f"{key}={v}" for v in expand_value(value)])
    return [list(cell) for cell in itertools.product(*axes)]


# ------------------------------------------------------------------------------------------------------- the plan


@dataclass
class Cell:
    """One validated run of the sweep."""

    overrides: list[str]
    cfg: DictConfig
    identity: tracking.RunIdentity

    @property
    def store(self) -> str:
        return tracking.canonical_store(self.cfg.tracking.store)

    @property
    def state_dir(self) -> str:
        return str(self.cfg.tracking.state_dir)

    @property
    def experiment(self) -> str:
        return self.cfg.tracking.experiment

    @property
    def label(self) -> str:
        return self.identity.key


def plan(cells: list[list[str]], experiment_yaml: str | Path | None = None) -> list[Cell]:
    """Validate every cell with ``load_config`` before anything runs; collapse cells with the same identity."""
    planned, seen = [], set()
    for i, overrides in enumerate(cells):
        try:
            cfg = load_config(overrides, experiment_yaml)
        except ConfigError as exc:
            raise ConfigError(f"sweep cell {i + 1}/{len(cells)} [{' '.join(overrides)}]: {exc.reason}",
                              where=exc.where, key=exc.key) from None
        cell = Cell(list(overrides), cfg, tracking.identity_of(cfg))
        key = (cell.store, cell.experiment, cell.identity.key)
        if key not in seen:
            seen.add(key)
            planned.append(cell)
    return planned


# ----------------------------------------------------------------------------------------------------- the report


@dataclass
class CellOutcome:
    label: str
    overrides: list[str]
    status: str  # finished | skipped | failed | diverged | busy
    run_id: str | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepReport:
    total: int
    outcomes: list[CellOutcome] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)  # RUNNING runs of dead processes marked KILLED at start
    elapsed: float = 0.0

    def _with(self, status: str) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def finished(self) -> list[CellOutcome]:
        return self._with("finished")

    @property
    def skipped(self) -> list[CellOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[CellOutcome]:
        return self._with("failed")

    @property
    def diverged(self) -> list[CellOutcome]:
        """Cells whose loss became NaN/inf, now or in an earlier sweep: results of their config, listed apart."""
        return self._with("diverged")

    @property
    def busy(self) -> list[CellOutcome]:
        return self._with("busy")

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        lines = [f"sweep: {self.total} cells — {len(self.finished)} finished, {len(self.skipped)} skipped "
                 f"(already finished), {len(self.failed)} failed, {len(self.diverged)} diverged, "
                 f"{len(self.busy)} busy elsewhere; "
                 f"{_hms(self.elapsed)}"]
        if self.reaped:
            lines.append(f"  marked KILLED at start (left RUNNING by a dead process): {len(self.reaped)} run(s)")
        lines += [f"  FAILED {o.label} [{' '.join(o.overrides)}]: {o.error}" for o in self.failed]
        lines += [f"  DIVERGED {o.label} [{' '.join(o.overrides)}]: {o.error}" for o in self.diverged]
        lines += [f"  BUSY   {o.label}: {o.error}" for o in self.busy]
        return "\n".join(lines)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


# --------------------------------------------------------------------------------------------- running one cell


def load_runner(spec: str) -> Callable[[DictConfig], str]:
    """``"package.module:function"`` → the function."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"runner {spec!r} is not 'module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ConfigError(f"runner {spec!r}: {module} has no function {name!r}")
    return fn


def _payload(cell: Cell) -> dict[str, Any]:
    """What a worker needs: the validated, resolved config as plain data (no re-validation, no torch import)."""
    return {"cfg": to_dict(cell.cfg), "key": cell.identity.key, "store": cell.store, "experiment": cell.experiment,
            "state_dir": cell.state_dir}


def _error_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def run_cell(runner: Callable[[DictConfig], str], payload: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """Run one cell under its identity lock → (status, run id, error line)."""
    cfg = OmegaConf.merge(OmegaConf.structured(Config), payload["cfg"])
    store, experiment, key, state = payload["store"], payload["experiment"], payload["key"], payload["state_dir"]
    try:
        with tracking.identity_lock(store, experiment, key, state_dir=state):  # the runner's tracked_run re-enters this lock
            if tracking.identity_finished(store, experiment, key):
                return "skipped", None, "finished meanwhile by another process"
            run_id = runner(cfg)
            if not tracking.identity_finished(store, experiment, key):
                return "failed", run_id, f"runner returned {run_id!r} but the store has no FINISHED run for {key}"
            return "finished", run_id, None
    except tracking.RunBusy as exc:
        return "busy", None, str(exc)
    except TrainingDiverged as exc:  # tracked_run recorded it FAILED with fb.status=diverged
        return "diverged", None, str(exc)
    except Exception as exc:
        return "failed", None, _error_line(exc)
    except BaseException:  # interrupted: one that landed inside create_run leaves a RUNNING run tracked_run never saw
        with contextlib.suppress(Exception):
            tracking.reap_dead_runs(store, experiment, {key}, "KILLED", "interrupted while the run was starting",
                                    state_dir=state)
        raise


def _watch_lifeline(lifeline: Any) -> None:
    """End this worker when the sweep process dies, however it dies, so a killed sweep leaves no orphan training on.

    Only the sweep holds the other end of ``lifeline`` and never writes to it: it becomes readable (EOF) exactly when
    the sweep is gone. Then interrupt the current run (tracked_run marks it KILLED) and, if that hangs, exit hard.
    (Not PR_SET_PDEATHSIG: a forkserver worker's parent is the forkserver, which outlives the sweep while workers run.)
    """

    def watch() -> None:
        try:
            lifeline.poll(None)
        except (OSError, EOFError):
            pass
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(15)
        os._exit(1)

    threading.Thread(target=watch, name="fb-sweep-lifeline", daemon=True).start()


def _worker_main(conn: Any, lifeline: Any, runner_spec: str, stores: list[str]) -> None:
    """Worker process: import the runner and open the stores once, then run the cells it is sent until None."""
    # SIGINT (Ctrl-C, or the sweep stopping us) ends the current run as KILLED through tracked_run. Installed
    # explicitly: a sweep started in the background inherits SIGINT as ignored. (SIGTERM keeps its default: a
    # handler would be inherited by the runner's forked helpers, e.g. a multiprocessing.Pool it terminates.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _watch_lifeline(lifeline)
    try:
        runner = load_runner(runner_spec)
        for store in stores:  # a process's first client costs ~1-2 s (imports, schema check): pay it before "ready"
            tracking.client(store)
    except BaseException as exc:
        conn.send(("fatal", f"cannot load runner {runner_spec!r}: {_error_line(exc)}"))
        return
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message is None:
                return
            index, payload = message
            conn.send(("result", index, run_cell(runner, payload)))
    except KeyboardInterrupt:  # Ctrl-C reached the whole process group; tracked_run marked the run KILLED
        return


# ----------------------------------------------------------------------------------------------- the worker pool


class _Worker:
    def __init__(self, ctx: Any, runner: str, number: int, stores: list[str]):
        self.conn, child = ctx.Pipe()
        lifeline, self.lifeline = ctx.Pipe(duplex=False)  # we keep the write end open and silent until we exit
        # Not a daemon: the runner's DataLoader may start worker processes of its own.
        self.proc = ctx.Process(target=_worker_main, args=(child, lifeline, runner, stores), name=f"fb-sweep-{number}")
        self.proc.start()
        child.close()
        lifeline.close()
        self.number, self.ready, self.cell, self.started = number, False, None, 0.0

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
            self.proc.join(grace)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()
        self.lifeline.close()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Progress:
    """One line per cell start and end, with counts, elapsed time and an ETA from the mean cell time."""

    def __init__(self, report: SweepReport, todo: int, workers: int, log: Callable[[str], None]):
        self.report, self.todo, self.workers, self.log = report, todo, max(workers, 1), log
        self.t0, self.started, self.ended, self.durations = time.monotonic(), 0, 0, []

    def start(self, cell: Cell, where: str) -> None:
        self.started += 1
        self.log(f"[sweep {self.started}/{self.todo}] start {cell.label} ({where})")

    def end(self, cell: Cell, outcome: CellOutcome, running: int) -> None:
        self.report.outcomes.append(outcome)
        self.ended += 1
        if outcome.status in ("finished", "failed", "diverged"):
            self.durations.append(outcome.seconds)
        left = self.todo - self.ended
        eta = "?"
        if self.durations:
            mean = sum(self.durations) / len(self.durations)
            eta = _hms(mean * left / min(self.workers, max(left, 1)))
        r = self.report
        extra = f": {outcome.error}" if outcome.error else ""
        self.log(f"[sweep {self.ended}/{self.todo}] {outcome.status} {cell.label} in {outcome.seconds:.1f}s{extra} | "
                 f"finished {len(r.finished)}, failed {len(r.failed)}, diverged {len(r.diverged)}, "
                 f"busy {len(r.busy)}, running {running} | "
                 f"elapsed {_hms(time.monotonic() - self.t0)}, ETA {eta}")


def _run_in_process(cells: list[Cell], runner_spec: str, progress: _Progress) -> None:
    runner = load_runner(runner_spec)
    for cell in cells:
        progress.start(cell, "in-process")
        t = time.monotonic()
        status, run_id, error = run_cell(runner, _payload(cell))
        progress.end(cell, CellOutcome(cell.label, cell.overrides, status, run_id, error, time.monotonic() - t), 0)


def _context(runner_spec: str, start_method: str) -> Any:
    """``forkserver`` (default where available): one server process imports the runner and MLflow once and forks
    each worker from itself, so N workers, and a fresh worker after a crash, start in milliseconds instead of
    re-importing torch/Lightning. ``spawn``: every worker imports everything itself. Both start workers from a
    clean single-threaded process (never a fork of this one, whose threads and DB connections must not be copied)."""
    if start_method == "forkserver" and "forkserver" not in multiprocessing.get_all_start_methods():
        start_method = "spawn"
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":  # takes effect when the server starts: the first pool of this process
        # (not fusionbench.sweep itself: run as `python -m fusionbench.sweep` it is re-run as the children's main)
        ctx.set_forkserver_preload(["fusionbench.tracking", "mlflow.store.tracking.sqlalchemy_store",
                                    runner_spec.partition(":")[0]])
    return ctx


def _run_in_pool(cells: list[Cell], runner_spec: str, workers: int, progress: _Progress,
                 start_method: str = "forkserver") -> None:
    ctx = _context(runner_spec, start_method)
    pending = collections.deque(range(len(cells)))
    stores = sorted({c.store for c in cells})
    pool = [_Worker(ctx, runner_spec, n, stores) for n in range(min(workers, len(cells)))]
    spawned = len(pool)

    def finish(w: _Worker, status: str, run_id: str | None, error: str | None) -> None:
        cell, w.cell = cells[w.cell], None
        outcome = CellOutcome(cell.label, cell.overrides, status, run_id, error, time.monotonic() - w.started)
        progress.end(cell, outcome, sum(x.cell is not None for x in pool))

    try:
        while pending or any(w.cell is not None for w in pool):
            for w in pool:
                if w.ready and w.cell is None and pending:
                    w.cell, w.started = pending.popleft(), time.monotonic()
                    w.conn.send((w.cell, _payload(cells[w.cell])))
                    progress.start(cells[w.cell], f"worker {w.number}, pid {w.proc.pid}")
            wait([w.conn for w in pool] + [w.proc.sentinel for w in pool], timeout=5.0)
            survivors = []
            for w in pool:
                try:
                    while w.conn.poll():
                        message = w.conn.recv()
                        if message[0] == "fatal":
                            raise RuntimeError(message[1])
                        if message[0] == "ready":
                            w.ready = True
                        elif message[0] == "result":
                            finish(w, *message[2])
                except (EOFError, OSError):
                    pass
                if w.proc.is_alive():
                    survivors.append(w)
                    continue
                w.proc.join()
                w.conn.close()
                w.lifeline.close()
                if not w.ready:
                    raise RuntimeError(f"sweep worker {w.number} died while starting ({_exit_text(w.proc.exitcode)})")
                if w.cell is not None:  # the cell took its worker down with it
                    cell = cells[w.cell]
                    why = f"worker process died ({_exit_text(w.proc.exitcode)}) while running this cell"
                    tracking.reap_dead_runs(cell.store, cell.experiment, {cell.identity.key}, "FAILED", why,
                                            state_dir=cell.state_dir)
                    finish(w, "failed", None, why)
                if pending:
                    survivors.append(_Worker(ctx, runner_spec, spawned, stores))
                    spawned += 1
            pool = survivors
    except BaseException:
        # Ctrl-C in a terminal reaches the workers too; give them a moment to mark their runs KILLED and exit, then
        # interrupt the rest (the parent alone was signalled, or a fatal error), then make sure they are gone.
        deadline = time.monotonic() + 2.0
        while any(w.proc.is_alive() for w in pool) and time.monotonic() < deadline:
            time.sleep(0.05)
        for w in pool:
            if w.proc.is_alive() and w.proc.pid:
                try:
                    os.kill(w.proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        for w in pool:
            w.stop(grace=10.0)
            if w.cell is not None:  # a worker that had to be terminated left its run RUNNING
                cell = cells[w.cell]
                with contextlib.suppress(Exception):
                    tracking.reap_dead_runs(cell.store, cell.experiment, {cell.identity.key}, "KILLED",
                                            "the sweep was interrupted", state_dir=cell.state_dir)
        raise
    for w in pool:
        w.stop()


# ------------------------------------------------------------------------------------------------------ the sweep


def _print(line: str) -> None:
    print(line, flush=True)


def expand_grids(grids: list[str] | list[list[str]]) -> list[list[str]]:
    """One grid (a list of overrides) or several (a list of such lists) → the cells of their union, in order."""
    if grids and all(isinstance(g, list) for g in grids):
        return [cell for grid in grids for cell in expand_grid(grid)]
    return expand_grid(list(grids))


LAUNCHERS = ("workers", *slurm.LAUNCHERS)


def run_sweep(overrides: list[str] | list[list[str]], experiment: str | Path | None = None, workers: int = 1,
              runner: str = DEFAULT_RUNNER, log: Callable[[str], None] = _print,
              start_method: str = "forkserver", launcher: str = "workers",
              launcher_options: list[str] | dict[str, Any] | None = None) -> SweepReport:
    """Expand, validate, skip FINISHED identities, reap dead RUNNING runs, run the rest; never raises for a cell.

    ``launcher``: ``workers`` (local worker processes), or ``slurm`` / ``local`` (one submitit job per cell, options
    ``launcher.<key>=value``: :mod:`fusionbench.slurm`)."""
    t0 = time.monotonic()
    module, sep, name = runner.partition(":")
    if not (module and sep and name):
        raise ConfigError(f"runner {runner!r} is not 'module:function'")
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}; valid: {', '.join(LAUNCHERS)}")
    options = slurm.parse_options(launcher_options, launcher)
    cells = plan(expand_grids(overrides), experiment)
    if launcher != "workers":
        slurm.check_cells(cells, options, launcher)  # before any store, data or job is made
    report = SweepReport(total=len(cells))
    finished: dict[tuple[str, str], set[str]] = {}
    diverged: dict[tuple[str, str], dict[str, str]] = {}
    for store, exp, state in dict.fromkeys((c.store, c.experiment, c.state_dir) for c in cells):
        target = (store, exp)
        tracking.ensure_experiment(*target)  # create the DB and experiment here, before any worker races for them
        report.reaped += tracking.reap_dead_runs(*target, state_dir=state)
        finished[target] = tracking.finished_identities(*target)
        diverged[target] = tracking.diverged_identities(*target)
    todo = []
    for cell in cells:
        target = (cell.store, cell.experiment)
        if cell.identity.key in finished[target]:
            report.outcomes.append(CellOutcome(cell.label, cell.overrides, "skipped"))
        elif cell.identity.key in diverged[target]:
            why = (f"{diverged[target][cell.identity.key]} (in an earlier run; not re-run: deterministic training "
                   f"diverges again; change the config or delete that run to retry)")
            report.outcomes.append(CellOutcome(cell.label, cell.overrides, "diverged", error=why))
        else:
            todo.append(cell)
    how = ('in-process' if workers < 1 else f'{min(workers, len(todo))} worker process(es)') if launcher == "workers" \
        else f"{launcher} jobs through submitit, {options['array_parallelism']} at a time"
    log(f"[sweep] {len(cells)} cells: {len(report.skipped)} already finished, {len(report.diverged)} diverged "
        f"before (not re-run), {len(todo)} to run ({how}); {len(report.reaped)} dead RUNNING run(s) marked KILLED")
    if todo:  # generate + leak-probe each synthetic set once here, so no two workers write one set
        prepare_cells([c.cfg for c in todo], log)
    progress = _Progress(report, len(todo), workers if launcher == "workers" else options["array_parallelism"], log)
    if todo:
        if launcher != "workers":
            def end(cell: Cell, status: str, run_id: str | None, error: str | None, seconds: float) -> None:
                progress.end(cell, CellOutcome(cell.label, cell.overrides, status, run_id, error, seconds),
                             progress.started - progress.ended - 1)

            slurm.run_jobs(todo, runner, launcher, options, _payload, progress.start, end, log)
        elif workers < 1:
            _run_in_process(todo, runner, progress)
        else:
            _run_in_pool(todo, runner, workers, progress, start_method)
    report.elapsed = time.monotonic() - t0
    log(report.summary())
    return report


def dry_run(overrides: list[str] | list[list[str]], experiment: str | Path | None = None,
            log: Callable[[str], None] = _print) -> list[tuple[Cell, str]]:
    """Validate every cell (``plan``) and list it with its state in its store: ``finished`` (skipped by a sweep),
    ``diverged`` (not re-run by a sweep) or ``to run``; run, generate and create nothing (a store that does not exist
    yet is not made)."""
    cells = plan(expand_grids(overrides), experiment)
    listed, known = [], {}
    for cell in cells:
        target = (cell.store, cell.experiment)
        if target not in known:  # one query per store: finished and diverged identities
            exists = tracking.is_server(cell.store) or Path(cell.store).exists()
            known[target] = (tracking.finished_identities(*target) if exists else set(),
                             tracking.diverged_identities(*target) if exists else {})
        finished, diverged = known[target]
        state = ("finished" if cell.identity.key in finished else
                 "diverged" if cell.identity.key in diverged else "to run")
        listed.append((cell, state))
        log(f"{state:9s} {cell.label}  [{' '.join(cell.overrides)}]")
    counts = {s: sum(state == s for _, state in listed) for s in ("finished", "diverged", "to run")}
    log(f"{len(cells)} cells: {counts['finished']} already finished, {counts['diverged']} diverged (not re-run), "
        f"{counts['to run']} to run (dry run: nothing ran)")
    return listed


def main(argv: list[str] | None = None) -> int:
    """``python -m fusionbench.sweep [key=a,b key=0:3 ...] [-e experiment.yaml] [-w N] [--runner mod:fn]``."""
    parser = argparse.ArgumentParser(prog="fusionbench sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value, key=a,b,c (list), key=a:b[:step] (int range)")
    parser.add_argument("-e", "--experiment", help="experiment YAML applied on top of the defaults")
    parser.add_argument("-w", "--workers", type=int, default=1, help="worker processes (0: run in this process)")
    parser.add_argument("--runner", default=DEFAULT_RUNNER, help="module:function taking a config, returning a run id")
    parser.add_argument("--dry-run", action="store_true", help="validate and list the cells; run nothing")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="workers",
                        help="workers: local processes; slurm / local: a submitit job per cell (launcher.<key>=value)")
    args = parser.parse_args(argv)
    args.overrides, launcher_options = slurm.split_options(args.overrides)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # a terminated sweep stops its workers and marks their runs KILLED
    try:
        if args.dry_run:
            dry_run(args.overrides, args.experiment)
            return 0
        report = run_sweep(args.overrides, args.experiment, args.workers, args.runner, launcher=args.launcher,
                           launcher_options=launcher_options)
    except (ConfigError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep interrupted; run it again to resume", file=sys.stderr)
        return 130
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
