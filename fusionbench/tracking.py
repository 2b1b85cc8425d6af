"""MLflow on a sqlite store or a tracking server: run identity, one tracked run per training, and the queries sweeps
and leaderboards use.

``tracking.store`` is a sqlite file (relative paths are under the project root) or an MLflow server URI
(``http://host:port``, what several nodes share: ``mlflow server --backend-store-uri ...``). Every call goes through an
explicit ``MlflowClient`` bound to ``sqlite:///<absolute path>`` or that URI (never the global ``mlflow`` state, never
``MLFLOW_TRACKING_URI``), so several processes can write one store at once. A sqlite store's artifacts go to
``<store dir>/mlartifacts/<experiment>``, never ``./mlruns``; a server's go where the server puts them.

The state folder (``tracking.state_dir``; "" = the sqlite file's folder, or ``results/tracking/<host>_<port>`` under the
project root for a server) holds the identity locks and the checkpoints. On a cluster it must be one folder every node
sees (the project folder on the shared disk, which submitit needs anyway) on a file system with working ``flock``.

A run holds an advisory lock (``fcntl.flock``) on ``<state dir>/.locks/<experiment>/<identity>.lock`` from before it is
created until after it is terminated. The kernel drops the lock when the process dies however it dies, so a run
that is RUNNING in the store while nobody holds its lock was left behind by a dead process
(:func:`reap_dead_runs` marks it KILLED); one whose lock is held is being run right now by a live process.

Every run this module terminates gets the tag ``fb.status`` ∈ finished / failed / killed / diverged. A diverged run
(:class:`fusionbench.errors.TrainingDiverged` raised inside it) ends FAILED, like any failure, so MLflow's own status
filter still works, but its ``fb.status`` says diverged and its name starts with ``[DIVERGED]`` (``[FAILED]`` /
``[KILLED]`` for the others: MLflow draws the same red cross for FAILED and KILLED, and cuts long names at the end)
so the runs table tells the three apart at a glance. A finished run also gets ``fb.test``, its headline test metric
per condition in percent, and :func:`ui_view` saves a runs-table view (status, that summary, the headline metric
columns) that ``make ui`` links to.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import re
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fusionbench.config import PROJECT_ROOT, ConfigError, config_hash, dataset_name, flatten, project_path, to_dict
from fusionbench.errors import TrainingDiverged

METRIC_NAME = re.compile(r"[A-Za-z0-9_/. -]+")  # what MLflow keeps; anything else it strips silently
PARAM_MAX_CHARS = 500  # longer config values are cut, with a marker saying how much was cut
PACKAGES = ("torch", "lightning", "torchmetrics", "torchaudio", "av", "mlflow", "omegaconf")
ACTIVE = "RUNNING"
# MLflow 3's UI opens an experiment in its training layout (Runs tab, model-training sidebar) when the experiment
# carries this tag with this value; without it the UI infers a kind, or shows its GenAI (traces) layout.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
STATUS_TAG = "fb.status"  # finished | failed | killed | diverged
FB_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
NAME_MARK = {"failed": "[FAILED] ", "killed": "[KILLED] ", "diverged": "[DIVERGED] "}  # put before the run name
UI_VIEW = "fusionbench"  # the shared view ``make ui`` opens (experiment tag mlflow.sharedViewState.<UI_VIEW>)

T = TypeVar("T")


class RunBusy(RuntimeError):
    """Another live process holds this run identity's lock (it is running that cell right now)."""


# ------------------------------------------------------------------------------------------------------ the store


SERVER_SCHEMES = ("http://", "https://")


def is_server(store: str | Path) -> bool:
    """Whether ``store`` is an MLflow tracking server URI (``http(s)://host:port``) rather than a sqlite file."""
    return str(store).startswith(SERVER_SCHEMES)


def check_store(store: str | Path) -> None:
    """A clear error for a store value that is neither a file path nor an ``http(s)://host[:port]`` URI."""
    text = str(store)
    if is_server(text):
        parsed = urlparse(text)
        if not parsed.hostname:
            raise ConfigError(f"tracking.store {text!r} has no host (expected http://host:port)", key="tracking.store")
        return
    if "://" in text:
        raise ConfigError(f"tracking.store {text!r}: a sqlite file path or an MLflow server URI (http://host:port), "
                          f"not a {text.split('://')[0]}:// URI", key="tracking.store")


def canonical_store(store: str | Path) -> str:
    """The store as sweeps compare and pass it: the server URI without a trailing ``/``, or the absolute file path."""
    check_store(store)
    return str(store).rstrip("/") if is_server(store) else str(project_path(store).resolve())


# file systems a sqlite file must not be shared on: its locking is unsafe over them (sqlite.org/faq.html#q5)
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "glusterfs", "ceph", "cephfs",
              "9p", "afs", "panfs", "wekafs", "orangefs", "ocfs2", "gfs2", "sshfs", "davfs")


def filesystem_type(path: str | Path, mounts: str | None = None) -> str:
    """The file system type holding ``path``: the longest mount point above it in ``/proc/mounts`` (or ``mounts``,
    that file's text); ``fuse.<name>`` types are reported as ``<name>``; "" if unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return ""
    target, best, kind = Path(path).resolve(), -1, ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].encode().decode("unicode_escape"))  # octal escapes: \040 is a space
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2].removeprefix("fuse.")
    return kind


def check_shared_store(store: str | Path, mounts: str | None = None) -> None:
    """Refuse a sqlite store for a sweep whose jobs may run on several nodes (``--launcher slurm``): on a local disk
    the other nodes do not see the file, on a network disk (``NETWORK_FS`` per ``/proc/mounts``) sqlite's locking is
    unsafe. fusionbench's rule: such sweeps take an MLflow server URI."""
    if is_server(store):
        return
    path = project_path(store).resolve()
    kind = filesystem_type(path, mounts)
    where = (f"on a network disk ({kind}), where sqlite's locking is unsafe" if kind in NETWORK_FS else
             f"on this machine's disk{f' ({kind})' if kind else ''}, which other nodes do not see")
    raise ConfigError(f"tracking.store {path} is a sqlite file {where}; a multi-node sweep needs an MLflow server: "
                      f"mlflow server --host <host> --port <port> --backend-store-uri sqlite:///<local disk>/mlflow.db "
                      f"--artifacts-destination <folder>, then tracking.store=http://<host>:<port>",
                      key="tracking.store")


def store_uri(store: str | Path) -> str:
    """The MLflow tracking URI: ``sqlite:///<absolute path>`` (relative paths are under the project root), or the
    server URI as given."""
    if is_server(store):
        return canonical_store(store)
    return f"sqlite:///{project_path(store).resolve()}"


def store_dir(store: str | Path, state_dir: str | Path = "") -> Path:
    """The state folder of a store (locks, checkpoints): ``state_dir`` if given, else the sqlite file's folder, else
    ``results/tracking/<host>_<port>`` under the project root for a server."""
    if state_dir:
        return project_path(state_dir).resolve()
    if is_server(store):
        netloc = re.sub(r"[^A-Za-z0-9_.-]+", "_", urlparse(str(store)).netloc)
        return project_path("results") / "tracking" / netloc
    return project_path(store).resolve().parent


def artifact_location(store: str | Path, experiment: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("._") or "experiment"
    return (store_dir(store) / "mlartifacts" / safe).as_uri()


def _transient(exc: BaseException) -> bool:
    """sqlite contention and first-use races: worth another try."""
    text = f"{type(exc).__name__}: {exc} {exc.__cause__!r}".lower()
    return any(s in text for s in ("database is locked", "operationalerror", "integrityerror", "unique constraint",
                                   "temporarily_unavailable", "disk i/o error"))


def with_retry(fn: Callable[..., T], *args: Any, attempts: int = 8, **kwargs: Any) -> T:
    """Call ``fn``; on a transient sqlite error back off (0.05 s doubling, jittered) and try again."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not _transient(exc):
                raise
            time.sleep(0.05 * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


_clients: dict[str, Any] = {}


def _client_for(uri: str):
    if uri not in _clients:
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=uri)
        c.search_experiments(max_results=1)  # opens the store now: creates and migrates a new DB file
        _clients[uri] = c
    return _clients[uri]


def _check_server(uri: str) -> None:
    """One short request first: a server that is down is a one-line error now, not minutes of MLflow's retries."""
    import requests

    try:
        requests.get(f"{uri}/health", timeout=10).raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__ if isinstance(exc, requests.ConnectionError) else str(exc)
        raise ConfigError(f"no MLflow server answers at {uri} ({reason}); start one: mlflow server --host <host> "
                          f"--port <port> --backend-store-uri sqlite:///<path>/mlflow.db --artifacts-destination "
                          f"<folder>", key="tracking.store") from None


def client(store: str | Path):
    """An ``MlflowClient`` on the store, created once per process (the first use of a new file migrates it)."""
    if is_server(store):
        uri = store_uri(store)
        if uri not in _clients:
            _check_server(uri)
            _client_for(uri)
        return _clients[uri]
    path = project_path(store).resolve()
    uri = store_uri(path)
    if uri not in _clients:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.parent / f".{path.name}.init.lock"):  # migrations of a new DB: one process at a time
            with_retry(_client_for, uri)
    return _clients[uri]


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=None)
def _experiment_id(uri: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    c = _client_for(uri)
    store = uri.removeprefix("sqlite:///")
    location = None if is_server(uri) else artifact_location(store, name)  # a server puts artifacts where it is told
    for _ in range(5):
        exp = with_retry(c.get_experiment_by_name, name)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise RuntimeError(
                    f"experiment {name!r} in {store} is deleted; restore it (mlflow experiments restore "
                    f"--experiment-id {exp.experiment_id}) or use another tracking.experiment"
                )
            if EXPERIMENT_KIND_TAG not in exp.tags:  # created before fusionbench set it (or by someone else)
                with_retry(c.set_experiment_tag, exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return exp.experiment_id
        try:
            return with_retry(c.create_experiment, name, artifact_location=location,
                              tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as exc:  # created by a racing process in between: read it back
            if "already exists" not in str(exc).lower() and not _transient(exc):
                raise
    raise RuntimeError(f"could not create or find experiment {name!r} in {store}")


def ensure_experiment(store: str | Path, name: str) -> str:
    """Create the DB (migrations) and the experiment if needed; return the experiment id. Safe under races."""
    client(store)
    return _experiment_id(store_uri(store), name)


# --------------------------------------------------------------------------------------------------- run identity


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run: a sweep skips an identity that has FINISHED."""

    fusion: str
    dataset: str
    config_hash: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.fusion}/{self.dataset}/{self.config_hash}/s{self.seed}"

    @property
    def run_name(self) -> str:
        """Readable and unique per identity: ``mbt/synth-joint/s1/3fa2c1`` (fusion/dataset/seed/short config hash)."""
        return f"{self.fusion}/{self.dataset}/s{self.seed}/{self.config_hash[:6]}"


def identity_of(cfg: DictConfig) -> RunIdentity:
    """fusion, dataset, config hash + data fingerprint (``fusionbench.data.fingerprint.identity_hash``: the same config
    on changed data is another run), seed."""
    from fusionbench.data.fingerprint import identity_hash

    return RunIdentity(cfg.fusion, dataset_name(cfg), identity_hash(cfg), int(cfg.seed))


# ------------------------------------------------------------------------------------------------ identity locks

_held: dict[Path, list[int]] = {}  # lock path → [fd, depth]: re-entrant within a process


def lock_path(store: str | Path, experiment: str, key: str, state_dir: str | Path = "") -> Path:
    safe_exp = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
    safe_key = re.sub(r"[^A-Za-z0-9_.-]+", "_", key.replace("/", "__"))[:120]
    digest = hashlib.sha1(f"{experiment}\0{key}".encode()).hexdigest()[:8]
    return store_dir(store, state_dir) / ".locks" / safe_exp / f"{safe_key}.{digest}.lock"


@contextmanager
def identity_lock(store: str | Path, experiment: str, key: str, timeout: float = 2.0,
                  state_dir: str | Path = "") -> Iterator[Path]:
    """Hold the identity's flock (re-entrant in one process); :class:`RunBusy` if another process keeps it > timeout.

    The short wait rides over another sweep merely probing the lock (:func:`lock_is_held`).
    """
    path = lock_path(store, experiment, key, state_dir)
    if path in _held:
        _held[path][1] += 1
        try:
            yield path
        finally:
            _held[path][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise RunBusy(f"run {key} is being run by another live process (lock {path})") from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[path] = [fd, 1]
    try:
        yield path
    finally:
        _held[path][1] -= 1
        if _held[path][1] == 0:
            del _held[path]
            os.close(fd)  # closing the descriptor drops the flock


def lock_is_held(store: str | Path, experiment: str, key: str, state_dir: str | Path = "") -> bool:
    """True if some live process (this one included) holds the identity's lock."""
    path = lock_path(store, experiment, key, state_dir)
    if path in _held:
        return True
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------- provenance


def git_state(root: Path = PROJECT_ROOT) -> tuple[str, str]:
    """(commit, dirty) of the project checkout; ("unknown", "unknown") without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown", "unknown"
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), str(bool(status.stdout.strip())).lower()
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def param_value(value: Any) -> str:
    """A config value as an MLflow param: ``str``, cut to PARAM_MAX_CHARS with a visible marker."""
    text = str(value)
    if len(text) > PARAM_MAX_CHARS:
        cut = len(text) - PARAM_MAX_CHARS
        text = f"{text[:PARAM_MAX_CHARS]}…[+{cut} chars truncated]"
    return text


def check_metric_name(name: str) -> str:
    """Raise ValueError for a name MLflow would alter (it strips characters outside ``[A-Za-z0-9_/. -]``)."""
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
        raise ValueError(f"metric name {name!r} has characters MLflow strips; use only [A-Za-z0-9_/. -]")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"metric name {name!r} is not a clean path (no empty, '.' or '..' segments)")
    return name


# ----------------------------------------------------------------------------------------------------- the run


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class TrackedRun:
    """A live MLflow run: batched logging with checked metric names."""

    def __init__(self, mlflow_client: Any, run_id: str, identity: RunIdentity):
        self.client, self.run_id, self.identity = mlflow_client, run_id, identity

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(check_metric_name(k), float(v), now, step or 0) for k, v in metrics.items()]
        for chunk in _chunks(entries, 1000):
            with_retry(self.client.log_batch, self.run_id, metrics=chunk, synchronous=True)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(str(k), param_value(v)) for k, v in params.items()]
        for chunk in _chunks(entries, 100):
            with_retry(self.client.log_batch, self.run_id, params=chunk, synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        entries = [RunTag(str(k), str(v)[:8000]) for k, v in tags.items()]
        for chunk in _chunks(entries, 100):
            with_retry(self.client.log_batch, self.run_id, tags=chunk, synchronous=True)

    def log_text(self, text: str, artifact_file: str) -> None:
        with_retry(self.client.log_text, self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with_retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    @property
    def artifact_dir(self) -> Path:
        """Local folder of this run's artifacts."""
        from urllib.parse import unquote, urlparse

        uri = with_retry(self.client.get_run, self.run_id).info.artifact_uri
        return Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)

    def pretrain_run_with(self, checkpoint_sha256: str) -> str | None:
        """The run (any experiment of this store) whose saved encoder has this sha256 (tag ``fb.checkpoint_sha256``,
        set by ``fusionbench pretrain``), newest first; None if no run of the store made it."""
        exp_ids = [e.experiment_id for e in with_retry(self.client.search_experiments)]
        found = with_retry(self.client.search_runs, exp_ids,
                           f"tags.`fb.checkpoint_sha256` = '{checkpoint_sha256}'", max_results=1,
                           order_by=["attributes.start_time DESC"]) if exp_ids else []
        return found[0].info.run_id if found else None


class NullRun(TrackedRun):
    """What a non-zero distributed rank gets: the same interface, logging nothing (rank 0 owns the MLflow run)."""

    def __init__(self, identity: RunIdentity):
        super().__init__(None, None, identity)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for name in metrics:
            check_metric_name(name)

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def pretrain_run_with(self, checkpoint_sha256: str) -> str | None:
        return None

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass


def process_rank() -> int:
    """0 on the global rank-0 process (or without distributed launch), non-zero on the other ranks, read as Lightning's
    cluster environments read them: torchrun's ``RANK``; under ``srun`` (``SLURMEnvironment.detect()``: ``SLURM_NTASKS``
    set, job name not bash / interactive) ``SLURM_PROCID``; else the copies Lightning's own DDP launcher starts
    (``LOCAL_RANK``, and ``NODE_RANK`` on the other nodes)."""
    env = {v: os.environ.get(v, "") for v in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")}
    if env["RANK"].isdigit():
        return int(env["RANK"])
    if env["SLURM_PROCID"].isdigit():
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect():
            return int(env["SLURM_PROCID"])
    return sum(int(env[v]) for v in ("NODE_RANK", "LOCAL_RANK") if env[v].isdigit())


def _mark(mlflow_client: Any, run_id: str, fb_status: str) -> None:
    """Tag ``fb.status`` and, for an unfinished run, append its marker to the run name (shown in the runs table)."""
    with_retry(mlflow_client.set_tag, run_id, STATUS_TAG, fb_status)
    mark = NAME_MARK.get(fb_status)
    if mark:
        name = with_retry(mlflow_client.get_run, run_id).info.run_name or ""
        if not name.startswith(mark):
            with_retry(mlflow_client.update_run, run_id, name=f"{mark}{name}")


def headline_metric(metric_names: Any) -> str | None:
    """``top1`` if the run has ``test/av/top1`` (single-label), else ``mAP`` if it has ``test/av/mAP``."""
    names = set(metric_names)
    return next((m for m in ("top1", "mAP") if f"test/av/{m}" in names), None)


def headline_summary(metrics: dict[str, float]) -> str | None:
    """``"top1 % av 91.7, audio_only 50.0, video_only 25.0"``: the headline test metric per condition, clean first."""
    headline = headline_metric(metrics)
    if headline is None:
        return None
    values = {k.split("/")[1]: v for k, v in metrics.items()
              if k.startswith("test/") and k.endswith(f"/{headline}") and k.count("/") == 2}
    order = sorted(values, key=lambda c: (c != "av", c))
    return f"{headline} % " + ", ".join(f"{c} {100 * values[c]:.1f}" for c in order)


def _terminate(tr: TrackedRun, status: str, error: BaseException | None = None) -> None:
    """End the run as ``status`` (FINISHED / FAILED / KILLED); a TrainingDiverged error makes it FAILED + diverged."""
    fb_status = "diverged" if isinstance(error, TrainingDiverged) else FB_STATUS[status]
    if error is not None:
        if isinstance(error, TrainingDiverged):
            last = str(error)  # "diverged: train loss nan at step 12"
        else:
            last = traceback.format_exception_only(type(error), error)[-1].strip() or type(error).__name__
        last = last if len(last) <= 1000 else f"{last[:1000]}…"
        try:
            tr.set_tags({"fb.error": last})
            tr.log_text("".join(traceback.format_exception(type(error), error, error.__traceback__)), "error.txt")
        except Exception:  # the status below matters more than the error text
            pass
    try:
        _mark(tr.client, tr.run_id, fb_status)
    finally:
        with_retry(tr.client.set_terminated, tr.run_id, status)


@contextmanager
def tracked_run(cfg: DictConfig) -> Iterator[TrackedRun]:
    """Open an MLflow run for ``cfg`` in ``cfg.tracking.store`` / ``cfg.tracking.experiment``.

    Logs identity tags, git commit and package versions, the flattened resolved config as params and
    ``config.yaml``; ends FINISHED, FAILED on an exception (tag ``fb.error`` = its last line, ``error.txt`` = the
    traceback; re-raised) or KILLED on KeyboardInterrupt / SystemExit (what Lightning raises after Ctrl-C). A
    :class:`TrainingDiverged` ends it FAILED with ``fb.status=diverged`` and ``fb.error="diverged: ..."`` (re-raised:
    ``fusionbench train`` exits non-zero). Every end sets ``fb.status``; see the module docstring for the names.
    Raises :class:`RunBusy` if another live process is running the same identity. On a distributed rank ≥ 1
    (``RANK`` / ``LOCAL_RANK``) yields a :class:`NullRun` that logs nothing: rank 0 records the run.
    """
    store, experiment = cfg.tracking.store, cfg.tracking.experiment
    ident = identity_of(cfg)
    if process_rank() != 0:
        yield NullRun(ident)
        return
    exp_id = ensure_experiment(store, experiment)
    mlflow_client = client(store)
    commit, dirty = git_state()
    tags = {
        "fb.fusion": ident.fusion, "fb.dataset": ident.dataset, "fb.config_hash": ident.config_hash,
        "fb.seed": ident.seed, "fb.identity": ident.key, "fb.preset": cfg.preset,
        "fb.protocol": cfg.train.protocol,
        "fb.init": "" if cfg.init.model or cfg.init.video or cfg.init.audio else "random",  # "": set by log_init
        "fb.git_commit": commit, "fb.git_dirty": dirty, "mlflow.source.git.commit": commit,
        **{f"fb.version.{k}": v for k, v in package_versions().items()},
    }
    with identity_lock(store, experiment, ident.key, state_dir=cfg.tracking.state_dir):
        run = with_retry(mlflow_client.create_run, exp_id, run_name=ident.run_name,
                         tags={k: str(v) for k, v in tags.items()})
        tr = TrackedRun(mlflow_client, run.info.run_id, ident)
        try:
            params = flatten(to_dict(cfg))
            params["config_hash"] = ident.config_hash
            tr.log_params(params)
            tr.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            yield tr
        except (KeyboardInterrupt, SystemExit, GeneratorExit) as exc:
            # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown: that is an interruption too.
            _terminate(tr, "KILLED", None if isinstance(exc, GeneratorExit) else exc)
            raise
        except BaseException as exc:
            _terminate(tr, "FAILED", exc)
            raise
        else:
            try:  # the runs table shows this tag as one short readable column
                summary = headline_summary(with_retry(mlflow_client.get_run, tr.run_id).data.metrics)
                if summary:
                    tr.set_tags({"fb.test": summary})
            except Exception:  # a summary is a convenience: never fail a finished run over it
                pass
            _terminate(tr, "FINISHED")


# ------------------------------------------------------------------------------------------------------ queries


def search_all(store: str | Path, experiment: str, filter_string: str = "") -> list[Any]:
    """Every run of the experiment matching the filter (all pages), oldest first; [] if there is no such experiment.

    Reads only: a missing store file is an error, not created."""
    path = project_path(store).resolve()
    if not is_server(store) and not path.exists():
        raise FileNotFoundError(f"no MLflow store at {path} (a sweep or a training run creates it)")
    c = client(store)
    exp = with_retry(c.get_experiment_by_name, experiment)
    if exp is None:
        return []
    exp_id = exp.experiment_id
    runs, token = [], None
    while True:
        page = with_retry(c.search_runs, [exp_id], filter_string, max_results=10000,
                          order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def identity_finished(store: str | Path, experiment: str, key: str) -> bool:
    """Whether ``key`` has a FINISHED run (one indexed query)."""
    if "'" in key:  # not expressible in a filter string: scan
        return key in finished_identities(store, experiment)
    exp = with_retry(client(store).get_experiment_by_name, experiment)
    if exp is None:
        return False
    page = with_retry(client(store).search_runs, [exp.experiment_id],
                      f"attributes.status = 'FINISHED' and tags.`fb.identity` = '{key}'", max_results=1)
    return len(page) > 0


def diverged_identities(store: str | Path, experiment: str) -> dict[str, str]:
    """Identity key → ``fb.error`` of its latest diverged run. Training is deterministic (fixed seed, deterministic
    kernels), so the same identity diverges again: a sweep reports these instead of re-running them."""
    runs = search_all(store, experiment, f"tags.`{STATUS_TAG}` = 'diverged'")
    return {r.data.tags["fb.identity"]: r.data.tags.get("fb.error", "diverged")
            for r in runs if "fb.identity" in r.data.tags}


def finished_identities(store: str | Path, experiment: str) -> set[str]:
    """Identity keys that have at least one FINISHED run."""
    runs = search_all(store, experiment, "attributes.status = 'FINISHED'")
    return {r.data.tags["fb.identity"] for r in runs if "fb.identity" in r.data.tags}


def runs_frame(store: str | Path, experiment: str) -> pd.DataFrame:
    """All runs, one row each: run_id, run_name, status, start_time, end_time, ``tags.*``, ``params.*``, ``metrics.*``
    (latest value of each metric) — the layout of ``mlflow.search_runs``."""
    rows = []
    for r in search_all(store, experiment):
        row: dict[str, Any] = {
            "run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
            "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(r.info.end_time, unit="ms", utc=True) if r.info.end_time else pd.NaT,
        }
        row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        rows.append(row)
    base = ["run_id", "run_name", "status", "start_time", "end_time"]
    return pd.DataFrame(rows, columns=base if not rows else None)


def ui_view(store: str | Path, experiment: str, port: int = 5000) -> str:
    """Save the runs-table view ``make ui`` opens and return its URL.

    MLflow 3.17's UI picks its layout from the ``workflowType`` URL parameter (else the last one chosen, GenAI by
    default), so the URL asks for ``machine_learning``; the view is an MLflow shared view (experiment tag
    ``mlflow.sharedViewState.<name>``, opened by ``viewStateShareKey``) showing ``fb.status``, ``fb.test``, the
    headline test metrics of the runs present and ``fb.error``, newest first. MLflow shows a banner offering to keep
    it as the user's own view."""
    exp_id = ensure_experiment(store, experiment)
    metric_names = {k for r in search_all(store, experiment) for k in r.data.metrics}
    headline = headline_metric(metric_names) or "top1"
    columns = ["tags.`fb.status`", "tags.`fb.test`", f"metrics.`test/av/{headline}`",
               *(f"metrics.`{k}`" for k in sorted(metric_names) if k.startswith("test/") and k.endswith(f"/{headline}")
                 and k != f"test/av/{headline}" and k.count("/") == 2),
               "tags.`fb.error`"]
    widths = {"attributes.`Run Name`": 290, "tags.`fb.status`": 80, "tags.`fb.test`": 310}  # names unclipped
    view = {"selectedColumns": columns, "columnOrder": ["attributes.`Run Name`", *columns], "columnWidths": widths,
            "orderByKey": "attributes.start_time", "orderByAsc": False}
    with_retry(client(store).set_experiment_tag, exp_id, f"mlflow.sharedViewState.{UI_VIEW}", json.dumps(view))
    return f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey={UI_VIEW}"


def reap_dead_runs(store: str | Path, experiment: str, keys: set[str] | None = None,
                   status: str = "KILLED", reason: str = "", state_dir: str | Path = "") -> list[str]:
    """Terminate RUNNING runs whose identity lock nobody holds (their process died); return their run ids.

    ``keys`` limits it to some identities; runs created outside :func:`tracked_run` (no ``fb.identity``) are left alone.
    """
    reaped = []
    for r in search_all(store, experiment, "attributes.status = 'RUNNING'"):
        key = r.data.tags.get("fb.identity")
        if key is None or (keys is not None and key not in keys) or lock_is_held(store, experiment, key, state_dir):
            continue
        c = client(store)
        # Read the status again after seeing the lock free: an owner terminates its run before it lets the lock go,
        # so a run still RUNNING now has no live owner (it did not just finish between the search and the probe).
        if with_retry(c.get_run, r.info.run_id).info.status != ACTIVE:
            continue
        with_retry(c.set_tag, r.info.run_id, "fb.error",
                   reason or "found RUNNING with no live process holding its lock (killed or crashed)")
        try:
            _mark(c, r.info.run_id, FB_STATUS[status])
        finally:
            with_retry(c.set_terminated, r.info.run_id, status)
        reaped.append(r.info.run_id)
    return reaped


def _main(argv: list[str] | None = None) -> int:
    """``python -m fusionbench.tracking ui-links STORE [--port N]``: save the view of every experiment, print links."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fusionbench.tracking")
    parser.add_argument("command", choices=["ui-links"])
    parser.add_argument("store")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    if not is_server(args.store) and not project_path(args.store).exists():
        print(f"no MLflow store at {project_path(args.store)} yet (a training run or a sweep creates it)")
        return 0
    experiments = [e.name for e in with_retry(client(args.store).search_experiments) if e.name != "Default"]
    print("MLflow UI, runs in the training layout with status and test columns:")
    for name in experiments:
        print(f"  {name}: {ui_view(args.store, name, args.port)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
