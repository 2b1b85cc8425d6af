"""tracking.store=http://...: sweeps against a real MLflow tracking server on 127.0.0.1 with a sqlite backend and a
local artifact folder: runs and artifacts go through the server, none is lost, the leaderboard is read from it."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from fusionbench import sweep, tracking
from fusionbench.config import ConfigError
from fusionbench.leaderboard import write_leaderboard
from sweep_runners import expected_top1, fresh_store

RUNNER = "sweep_runners:run"


def _grid(uri: str, state: Path, *items: str) -> list[str]:
    return [*items, f"tracking.store={uri}", "tracking.experiment=srv", f"tracking.state_dir={state}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def inprocess_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """MLflow's own tracking-server app (the Flask app ``mlflow server`` serves), on a thread of this process:
    a sqlite backend, artifacts proxied into a local folder. Starts in about a second (``mlflow server``: ~15 s)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    from mlflow.server import handlers
    from mlflow.server.constants import (ARTIFACT_ROOT_ENV_VAR, ARTIFACTS_DESTINATION_ENV_VAR,
                                         BACKEND_STORE_URI_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR)

    backend, artifacts = fresh_store(tmp_path / "server"), tmp_path / "server" / "artifacts"
    for name, value in [(BACKEND_STORE_URI_ENV_VAR, f"sqlite:///{backend}"), (SERVE_ARTIFACTS_ENV_VAR, "true"),
                        (ARTIFACTS_DESTINATION_ENV_VAR, str(artifacts)), (ARTIFACT_ROOT_ENV_VAR, "mlflow-artifacts:/")]:
        monkeypatch.setenv(name, value)
    for cached in ("_tracking_store", "_model_registry_store", "_artifact_repo"):  # the app's per-process stores
        monkeypatch.setattr(handlers, cached, None)

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: object) -> None:
            pass

    from mlflow.server import app

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", artifacts
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``mlflow server`` process on a free port: sqlite backend (migrated already), proxied local artifacts."""
    backend, artifacts = fresh_store(tmp_path / "server"), tmp_path / "server" / "artifacts"
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server" / "log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{backend}", "--artifacts-destination", str(artifacts),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server' / 'log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield uri, artifacts
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _check_sweep_and_leaderboard(uri: str, artifacts: Path, state: Path, grid: list[str], report: sweep.SweepReport,
                                 out: Path) -> None:
    cells = sweep.plan(sweep.expand_grid(grid))
    assert report.ok and len(report.finished) == len(cells), report.summary()
    runs = tracking.runs_frame(uri, "srv")  # read back from the server: every run there, FINISHED, once each
    assert len(runs) == len(cells) and set(runs["status"]) == {"FINISHED"} and runs["tags.fb.identity"].is_unique
    assert set(runs["run_id"]) == {o.run_id for o in report.finished}
    for run_id in runs["run_id"]:  # artifacts went through the server into its folder
        assert len(list(artifacts.glob(f"*/{run_id}/artifacts/config.yaml"))) == 1
    assert len(list((state / ".locks" / "srv").glob("*.lock"))) == len(cells)  # identity locks in the state dir
    paths = write_leaderboard(uri, "srv", out)
    table = pd.read_csv(paths["runs"])
    assert set(table["run_id"]) == set(runs["run_id"])
    av = table[table["condition"] == "av"].set_index("seed")
    assert dict(av["top1"]) == pytest.approx({c.cfg.seed: expected_top1(c.cfg) for c in cells})


def test_a_sweep_on_a_server_store_records_every_run_there_and_a_rerun_skips(inprocess_server, tmp_path: Path) -> None:
    uri, artifacts = inprocess_server
    state = tmp_path / "state"
    grid = _grid(uri, state, "seed=0,1", "data.manifest=sleep=0")
    report = sweep.run_sweep(grid, workers=0, runner=RUNNER, log=lambda _: None)
    _check_sweep_and_leaderboard(uri, artifacts, state, grid, report, tmp_path / "board")
    assert sweep.dry_run(grid, log=lambda _: None)[0][1] == "finished"
    again = sweep.run_sweep(grid, workers=0, runner=RUNNER, log=lambda _: None)
    assert len(again.skipped) == 2 and len(tracking.runs_frame(uri, "srv")) == 2


@pytest.mark.slow  # an `mlflow server` process (~15 s to start on a loaded 2-core box) and two worker processes
def test_two_sweep_workers_share_an_mlflow_server_and_lose_no_run(mlflow_server, tmp_path: Path) -> None:
    uri, artifacts = mlflow_server
    state = tmp_path / "state"
    # rendezvous=2: each run waits until two processes are inside a run, so both workers write to the server at once
    grid = _grid(uri, state, "seed=0:6", "data.manifest=rendezvous=2",
                 "eval.conditions=[av,audio_only,video_only]")
    report = sweep.run_sweep(grid, workers=2, runner=RUNNER, log=lambda _: None)
    _check_sweep_and_leaderboard(uri, artifacts, state, grid, report, tmp_path / "board")
    again = sweep.run_sweep(grid, workers=2, runner=RUNNER, log=lambda _: None)
    assert len(again.skipped) == 6 and not again.finished and len(tracking.runs_frame(uri, "srv")) == 6


def test_a_server_that_does_not_answer_is_one_clear_error_before_any_run(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ConfigError, match=rf"no MLflow server answers at {uri} \(ConnectionError\); start one: "
                                          r"mlflow server"):
        sweep.run_sweep(_grid(uri, tmp_path / "state", "seed=0", "data.manifest=sleep=0"), runner=RUNNER)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("store, message", [
    ("ftp://host/db", r"a sqlite file path or an MLflow server URI \(http://host:port\), not a ftp:// URI"),
    ("http://", r"has no host"),
])
def test_a_store_that_is_neither_a_file_nor_a_server_uri_is_refused(store: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep.plan(sweep.expand_grid([f"tracking.store={store}", "data.manifest=sleep=0"]))


def test_server_store_paths() -> None:
    uri = "http://tracking.cluster:5000/"
    assert tracking.store_uri(uri) == tracking.canonical_store(uri) == "http://tracking.cluster:5000"
    assert tracking.store_dir(uri).parts[-3:] == ("results", "tracking", "tracking.cluster_5000")
    assert tracking.store_dir(uri, "/shared/fb") == Path("/shared/fb")
    assert tracking.store_uri("results/x.db").startswith("sqlite:////") and tracking.is_server(uri)
