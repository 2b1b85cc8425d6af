"""Sweep cells as cluster jobs through submitit: ``fusionbench sweep --launcher slurm`` (or ``local``, submitit's local
executor: the same jobs as processes on this machine, what the tests run).

The sweep keeps its rules (:func:`fusionbench.sweep.run_sweep`): every cell is validated, FINISHED identities are
skipped and dead RUNNING runs reaped *before* anything is submitted; each remaining cell is one job (one SLURM job
array, ``launcher.array_parallelism`` of them at a time) that runs :func:`fusionbench.sweep.run_cell` under the
identity lock, so a cell finished or running elsewhere meanwhile is skipped or reported busy, never run twice.
A job that dies without ending its run (time limit, preemption, node failure, OOM kill) leaves it RUNNING with its lock
free: the waiting sweep marks it FAILED, and a later sweep runs the cell again, resuming from its last checkpoint.
The submitting process waits for the jobs and reports each like a local worker's cell; interrupted, it leaves SLURM
jobs running (``scancel`` stops them; a later sweep skips what they finished) and cancels local ones.

Options are ``launcher.<key>=value`` items among the sweep's overrides (the names of hydra's submitit launcher,
submitit's without the ``slurm_`` prefix), validated before anything is submitted; see :data:`OPTIONS`.
Output folders are per job and per run: submitit's ``<folder>/<job id>/`` (script, pickles, stdout, stderr) and each
identity's own checkpoint folder. With ``gpus_per_node`` > 1, SLURM starts one task per GPU (``tasks_per_node``,
Lightning's SLURM rule); every task runs the cell, only global rank 0 does the sweep's bookkeeping and MLflow logging.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionbench import tracking
from fusionbench.config import ConfigError

if TYPE_CHECKING:
    from fusionbench.sweep import Cell

LAUNCHERS = ("local", "slurm")  # submitit's executors; the sweep's own default is "workers" (local processes)
PREFIX = "launcher."
# launcher.<key> → (type, submitit AutoExecutor parameter or None for ours, default)
OPTIONS: dict[str, tuple[type, str | None, Any]] = {
    "partition": (str, "slurm_partition", None),
    "account": (str, "slurm_account", None),
    "qos": (str, "slurm_qos", None),
    "constraint": (str, "slurm_constraint", None),
    "timeout_min": (int, "timeout_min", 240),  # per job (submitit's default, 5 min, ends any real training)
    "nodes": (int, "nodes", 1),
    "gpus_per_node": (int, "gpus_per_node", 0),
    "tasks_per_node": (int, "tasks_per_node", None),  # None: one per GPU (at least 1)
    "cpus_per_task": (int, "cpus_per_task", None),
    "mem_gb": (float, "mem_gb", None),
    "array_parallelism": (int, "slurm_array_parallelism", 256),  # jobs of the array running at once (%N)
    "folder": (str, None, ""),  # "" = <state dir>/submitit/<experiment>; one sub-folder per job
    "poll_s": (float, None, None),  # how often the sweep polls job states (default 0.2 local, 30 slurm)
}
GENERIC = {"timeout_min", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb"}  # local honours these


def split_options(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``["fusion=a,b", "launcher.partition=gpu"]`` → (the grid's overrides, the ``launcher.*`` items)."""
    grid = [o for o in overrides if not o.startswith(PREFIX)]
    return grid, [o for o in overrides if o.startswith(PREFIX)]


def parse_options(items: list[str] | dict[str, Any] | None, launcher: str) -> dict[str, Any]:
    """``launcher.*`` items (or a dict key → value) → typed options with defaults; a clear error names the keys."""
    if isinstance(items, dict):
        given = dict(items)
    else:
        given = {}
        for item in items or []:
            key, sep, value = item.removeprefix(PREFIX).partition("=")
            if not sep or not item.startswith(PREFIX):
                raise ConfigError(f"launcher option {item!r} is not launcher.key=value", key=item)
            given[key] = value
    if given and launcher not in LAUNCHERS:
        raise ConfigError(f"launcher.{next(iter(given))} needs --launcher {' or '.join(LAUNCHERS)} "
                          f"(the sweep's own worker processes take --workers)", key=f"launcher.{next(iter(given))}")
    options = {key: default for key, (_, _, default) in OPTIONS.items()}
    for key, value in given.items():
        if key not in OPTIONS:
            raise ConfigError(f"unknown launcher key 'launcher.{key}'; valid keys: {', '.join(OPTIONS)}",
                              key=f"launcher.{key}")
        kind = OPTIONS[key][0]
        try:
            options[key] = kind(value) if not isinstance(value, kind) else value
        except (TypeError, ValueError):
            raise ConfigError(f"launcher.{key}={value!r} is not {'an integer' if kind is int else 'a number'}",
                              key=f"launcher.{key}") from None
        if kind in (int, float) and options[key] < (0 if key == "gpus_per_node" else 1) and key != "poll_s":
            raise ConfigError(f"launcher.{key} must be >= {0 if key == 'gpus_per_node' else 1}, got {value}",
                              key=f"launcher.{key}")
    if options["tasks_per_node"] is None:
        options["tasks_per_node"] = max(1, options["gpus_per_node"])
    if options["poll_s"] is None:
        options["poll_s"] = 0.2 if launcher == "local" else 30.0
    if launcher == "local" and options["nodes"] > 1:
        raise ConfigError("launcher.nodes > 1 needs --launcher slurm (the local executor runs on this machine)",
                          key="launcher.nodes")
    return options


def executor_parameters(options: dict[str, Any], launcher: str, name: str) -> dict[str, Any]:
    """The options as submitit ``AutoExecutor.update_parameters`` keywords for this launcher."""
    params: dict[str, Any] = {"name": name}
    for key, (_, target, _) in OPTIONS.items():
        value = options[key]
        if target is None or value is None or (launcher == "local" and key not in GENERIC):
            continue
        params[target] = value
    return params


def check_cells(cells: list[Cell], options: dict[str, Any], launcher: str) -> None:
    """Before submitting: a multi-node launcher needs a store every node can share (a server), and a job's SLURM tasks
    must be the processes Lightning expects (``train.devices`` per node)."""
    for cell in cells:
        if launcher == "slurm":
            tracking.check_shared_store(cell.store)
        nodes = int(cell.cfg.train.get("num_nodes", 1))
        if options["nodes"] != nodes:
            raise ConfigError(f"{cell.label}: launcher.nodes={options['nodes']} but the run trains on {nodes} node(s)"
                              f"{'' if 'num_nodes' in cell.cfg.train else ' (the Trainer takes one node per run)'}; "
                              f"each cell is its own job: keep launcher.nodes={nodes}", key="launcher.nodes")
        devices = int(cell.cfg.train.devices) if str(cell.cfg.train.devices).isdigit() else None
        tasks = options["tasks_per_node"]
        if tasks > 1 and devices is not None and devices != tasks:
            raise ConfigError(f"{cell.label}: launcher.tasks_per_node={tasks} (one task per GPU) but train.devices="
                              f"{devices}; Lightning runs one process per SLURM task: set train.devices={tasks} "
                              f"train.strategy=ddp", key="train.devices")


@dataclass
class CellJob:
    """What one job runs (pickled by submitit): the sweep's ``run_cell`` under the identity lock, on global rank 0."""

    runner: str

    def __call__(self, payload: dict[str, Any]) -> tuple[str, str | None, str | None]:
        import submitit

        from fusionbench.sweep import load_runner, run_cell

        rank = submitit.JobEnvironment().global_rank
        if rank != 0:  # another SLURM task of a multi-GPU job: train, log nothing (tracked_run's NullRun)
            os.environ["RANK"] = str(rank)
            from omegaconf import OmegaConf

            from fusionbench.config import Config

            load_runner(self.runner)(OmegaConf.merge(OmegaConf.structured(Config), payload["cfg"]))
            return "rank", None, None
        # a run an earlier job of this identity left RUNNING (its job timed out or was preempted) is ended first
        tracking.reap_dead_runs(payload["store"], payload["experiment"], {payload["key"]}, "KILLED",
                                "its job ended without ending the run (time limit, preemption or node failure)",
                                state_dir=payload["state_dir"])
        return run_cell(load_runner(self.runner), payload)


def job_folder(cells: list[Cell], options: dict[str, Any]) -> Path:
    """The launcher's base folder; every job gets a sub-folder of its own (never shared between two jobs)."""
    from fusionbench.config import project_path

    return project_path(options["folder"]) if options["folder"] else \
        tracking.store_dir(cells[0].store, cells[0].cfg.tracking.state_dir) / "submitit" / _safe(cells[0].experiment)


def local_job_folder(base: Path, index: int) -> Path:
    """A new, already created folder for one local job: ``<base>/job-<cell>-<random>``.

    Not submitit's ``%j`` as for SLURM: the local executor's controller process opens ``<job id>/*_log.out`` before
    the submitting process has created ``<job id>/`` (a race a loaded machine loses: "No output/error stream
    produced"); a folder that exists before the submission cannot lose it."""
    import tempfile

    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"job-{index:04d}-", dir=base))


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"


def run_jobs(cells: list[Cell], runner: str, launcher: str, options: dict[str, Any], payload: Callable[[Cell], dict],
             start: Callable[[Cell, str], None], end: Callable[[Cell, str, str | None, str | None, float], None],
             log: Callable[[str], None]) -> None:
    """Submit one job per cell and wait for them; ``start`` / ``end`` report each like a local worker's cell."""
    import submitit

    folder = job_folder(cells, options)
    parameters = executor_parameters(options, launcher, f"fb-{_safe(cells[0].experiment)}")

    def executor_in(job_dir: Path) -> Any:
        made = submitit.AutoExecutor(folder=job_dir, cluster=launcher)
        made.update_parameters(**parameters)
        return made

    job_fn = CellJob(runner)
    queue = list(range(len(cells)))
    if launcher == "slurm":  # one array; SLURM runs array_parallelism of it at once
        jobs = dict(zip(queue, executor_in(folder / "%j").map_array(job_fn, [payload(cells[i]) for i in queue])))
        queue = []
    else:  # the local executor has no arrays: keep array_parallelism jobs alive
        jobs = {}
    started: dict[int, float] = {}
    active: dict[int, Any] = {}

    def launch(i: int, job: Any) -> None:
        active[i], started[i] = job, time.monotonic()
        start(cells[i], f"{launcher} job {job.job_id}, log {Path(job.paths.stdout).parent}")

    for i, job in jobs.items():
        launch(i, job)
    try:
        while queue or active:
            while queue and len(active) < options["array_parallelism"]:
                i = queue.pop(0)
                launch(i, executor_in(local_job_folder(folder, i)).submit(job_fn, payload(cells[i])))
            time.sleep(options["poll_s"])
            for i, job in list(active.items()):
                if not job.done():
                    continue
                del active[i]
                end(cells[i], *_outcome(cells[i], job), time.monotonic() - started[i])
    except BaseException:
        if active and launcher == "slurm":
            ids = sorted({str(j.job_id).split("_")[0] for j in active.values()})
            log(f"[sweep] {len(active)} SLURM job(s) keep running (scancel {' '.join(ids)} stops them); "
                f"run the sweep again to collect them: it skips what they finish")
        elif active:
            for job in active.values():
                job.cancel(check=False)
            deadline = time.monotonic() + 15
            while any(not j.done() for j in active.values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            for i in active:
                cell = cells[i]
                tracking.reap_dead_runs(cell.store, cell.experiment, {cell.identity.key}, "KILLED",
                                        "the sweep was interrupted", state_dir=cell.cfg.tracking.state_dir)
        raise


def _outcome(cell: Cell, job: Any) -> tuple[str, str | None, str | None]:
    """(status, run id, error) of a done job; a job that died outside run_cell fails its cell and its RUNNING run."""
    try:
        return tuple(job.results()[0])  # task 0 is global rank 0, the one that ran the cell's bookkeeping
    except Exception as exc:  # submitit's FailedJobError / UncompletedJobError: the job itself died or was cancelled
        last = next((line for line in reversed(str(exc).strip().splitlines()) if line.strip()), type(exc).__name__)
        why = f"job {job.job_id} ended without a result ({type(exc).__name__}: {last.strip()[:300]}); " \
              f"log {job.paths.stderr}"
        tracking.reap_dead_runs(cell.store, cell.experiment, {cell.identity.key}, "FAILED", why,
                                state_dir=cell.cfg.tracking.state_dir)
        return "failed", None, why
