"""tracking: what a run records in a real sqlite MLflow store, its end states, locks and dead-run reaping."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fusionbench import tracking
from fusionbench.config import PROJECT_ROOT, Config, load_config
from fusionbench.data.fingerprint import identity_hash
from fusionbench.errors import TrainingDiverged
from sweep_runners import fresh_store


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return fresh_store(tmp_path / "results")


def _cfg(store: Path, *overrides: str):
    return load_config([f"tracking.store={store}", "tracking.experiment=t", *overrides])


def test_store_uri_is_absolute_sqlite(tmp_path: Path) -> None:
    assert tracking.store_uri("results/mlflow.db") == f"sqlite:///{PROJECT_ROOT / 'results' / 'mlflow.db'}"
    assert tracking.store_uri(tmp_path / "x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert tracking.artifact_location(tmp_path / "x.db", "my exp") == (tmp_path / "mlartifacts" / "my_exp").as_uri()


def test_ensure_experiment_is_idempotent(store: Path) -> None:
    first = tracking.ensure_experiment(store, "t")
    assert tracking.ensure_experiment(store, "t") == first
    assert tracking.ensure_experiment(store, "other") != first
    exp = tracking.client(store).get_experiment(first)
    assert exp.artifact_location == (store.parent / "mlartifacts" / "t").as_uri()
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3 UI: training layout


def test_experiment_kind_is_set_on_an_existing_experiment_that_lacks_it(store: Path) -> None:
    c = tracking.client(store)
    exp_id = c.create_experiment("made-elsewhere")  # e.g. by an older fusionbench or by hand
    assert "mlflow.experimentKind" not in c.get_experiment(exp_id).tags
    assert tracking.ensure_experiment(store, "made-elsewhere") == exp_id
    assert c.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    c.set_experiment_tag(exp_id, "mlflow.experimentKind", "genai_development")  # a user's own choice is kept
    tracking._experiment_id.cache_clear()
    tracking.ensure_experiment(store, "made-elsewhere")
    assert c.get_experiment(exp_id).tags["mlflow.experimentKind"] == "genai_development"


def test_run_names_are_readable_and_unique_per_identity(store: Path) -> None:
    a = tracking.identity_of(_cfg(store, "fusion=mbt", "seed=1"))
    b = tracking.identity_of(_cfg(store, "fusion=mbt", "seed=1", "train.lr=0.002"))
    assert a.run_name == f"mbt/synth-joint/s1/{a.config_hash[:6]}"
    assert a.run_name != b.run_name  # same fusion, data and seed; another config


def test_finished_run_records_identity_params_config_and_metrics(store: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in ./mlruns
    cfg = _cfg(store, "seed=7", "eval.conditions=[av,audio_snr_-5,video_noise_0.5]", "train.lr=0.002")
    metrics = {"test/av/top1": 0.9, "test/audio_snr_-5/top1": 0.5, "test/video_noise_0.5/mAP": 0.25,
               "model/params": 12345.0, "time/train_s": 1.5}
    with tracking.tracked_run(cfg) as tr:
        tr.log_metrics(metrics)
        tr.log_metrics({"train/loss": 2.0}, step=3)
        tr.set_tags({"fb.extra": "yes"})
    run = tracking.client(store).get_run(tr.run_id)
    ident = tracking.identity_of(cfg)

    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"late/synth-joint/s7/{ident.config_hash[:6]}"
    assert run.data.tags["fb.status"] == "finished"
    tags = run.data.tags
    assert tags["fb.fusion"] == "late" and tags["fb.dataset"] == "synth-joint" and tags["fb.seed"] == "7"
    assert tags["fb.config_hash"] == identity_hash(cfg) == ident.config_hash  # the config hash + the data fingerprint
    assert tags["fb.identity"] == ident.key == f"late/synth-joint/{ident.config_hash}/s7"
    assert tags["fb.preset"] == "small" and tags["fb.extra"] == "yes"
    assert tags["fb.test"] == "top1 % av 90.0, audio_snr_-5 50.0"  # the headline per condition, for the runs table
    assert len(tags["fb.git_commit"]) == 40 or tags["fb.git_commit"] == "unknown"
    assert tags["fb.git_dirty"] in ("true", "false", "unknown")
    for pkg in ("torch", "lightning", "torchmetrics", "torchaudio", "av", "mlflow", "python"):
        assert tags[f"fb.version.{pkg}"]
    params = run.data.params
    assert params["seed"] == "7" and params["config_hash"] == ident.config_hash
    assert params["train.lr"] == "0.002" and params["eval.conditions"] == "['av', 'audio_snr_-5', 'video_noise_0.5']"
    assert run.data.metrics == {**metrics, "train/loss": 2.0}  # names intact, nothing stripped

    artifact = Path(tracking.client(store).download_artifacts(tr.run_id, "config.yaml", str(tmp_path)))
    reloaded = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(artifact))
    assert reloaded.seed == 7 and identity_hash(reloaded) == ident.config_hash  # the artifact is the resolved config
    assert str(tr.artifact_dir).startswith(str(store.parent / "mlartifacts" / "t"))
    assert not (tmp_path / "mlruns").exists()
    assert tracking.finished_identities(store, "t") == {ident.key}
    assert tracking.identity_finished(store, "t", ident.key)


def test_ui_view_shows_status_summary_and_headline_columns_in_the_training_layout(store: Path, capsys) -> None:
    with tracking.tracked_run(_cfg(store, "eval.conditions=[av,audio_only]")) as tr:
        tr.log_metrics({"test/av/top1": 0.5, "test/audio_only/top1": 0.25, "test/av/loss": 1.0})
    url = tracking.ui_view(store, "t", port=5077)
    exp = tracking.client(store).get_experiment_by_name("t")
    assert url == (f"http://127.0.0.1:5077/#/experiments/{exp.experiment_id}/runs"
                   "?workflowType=machine_learning&viewStateShareKey=fusionbench")
    view = json.loads(exp.tags["mlflow.sharedViewState.fusionbench"])
    assert view["selectedColumns"] == ["tags.`fb.status`", "tags.`fb.test`", "metrics.`test/av/top1`",
                                       "metrics.`test/audio_only/top1`", "tags.`fb.error`"]
    assert view["orderByKey"] == "attributes.start_time" and view["orderByAsc"] is False
    assert tracking._main(["ui-links", str(store), "--port", "5077"]) == 0
    assert f"t: {url}" in capsys.readouterr().out
    assert tracking._main(["ui-links", str(store.parent / "none.db")]) == 0
    assert "no MLflow store" in capsys.readouterr().out and not (store.parent / "none.db").exists()


def test_long_param_values_are_cut_with_a_marker() -> None:
    text = tracking.param_value("x" * 800)
    assert text.startswith("x" * 500) and text.endswith("[+300 chars truncated]")
    assert tracking.param_value([1, 2]) == "[1, 2]"


@pytest.mark.parametrize("name", ["test/mAP@drop=audio", "test/av/top(1)", "/test/av", "test//av", "test/../av"])
def test_metric_names_mlflow_would_alter_are_rejected(store: Path, name: str) -> None:
    with pytest.raises(ValueError, match="metric name"):
        with tracking.tracked_run(_cfg(store)) as tr:
            tr.log_metrics({"ok/name": 1.0, name: 1.0})
    run = tracking.client(store).get_run(tr.run_id)
    assert run.data.metrics == {}  # the batch was refused as a whole
    assert run.info.status == "FAILED" and "metric name" in run.data.tags["fb.error"]


def test_exception_marks_failed_with_error_line_and_reraises(store: Path) -> None:
    with pytest.raises(RuntimeError, match="out of cheese"):
        with tracking.tracked_run(_cfg(store)) as tr:
            raise RuntimeError("out of cheese")
    run = tracking.client(store).get_run(tr.run_id)
    assert run.info.status == "FAILED" and run.data.tags["fb.status"] == "failed"
    assert run.data.tags["fb.error"] == "RuntimeError: out of cheese"
    assert run.info.run_name == f"[FAILED] {tr.identity.run_name}"
    assert tracking.finished_identities(store, "t") == set()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])  # Lightning exits(1) after Ctrl-C
def test_interruption_marks_killed(store: Path, interrupt: type[BaseException]) -> None:
    with pytest.raises(interrupt):
        with tracking.tracked_run(_cfg(store)) as tr:
            raise interrupt
    run = tracking.client(store).get_run(tr.run_id)
    assert run.info.status == "KILLED" and run.data.tags["fb.status"] == "killed"
    assert run.info.run_name == f"[KILLED] {tr.identity.run_name}"


def test_training_diverged_marks_failed_diverged_with_a_visible_name_and_reraises(store: Path) -> None:
    with pytest.raises(TrainingDiverged):
        with tracking.tracked_run(_cfg(store)) as tr:
            raise TrainingDiverged("train", 12, float("nan"))
    run = tracking.client(store).get_run(tr.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["fb.status"] == "diverged"
    assert run.data.tags["fb.error"] == "diverged: train loss nan at step 12"
    assert run.info.run_name == f"[DIVERGED] {tr.identity.run_name}"
    assert tracking.diverged_identities(store, "t") == {tr.identity.key: "diverged: train loss nan at step 12"}
    assert tracking.finished_identities(store, "t") == set()


def test_runs_frame_has_status_tags_params_metrics(store: Path) -> None:
    with tracking.tracked_run(_cfg(store, "seed=1")) as tr:
        tr.log_metrics({"test/av/top1": 0.5})
    with pytest.raises(ValueError):
        with tracking.tracked_run(_cfg(store, "seed=2")):
            raise ValueError("nope")
    frame = tracking.runs_frame(store, "t").set_index("tags.fb.seed")
    assert frame.loc["1", "status"] == "FINISHED" and frame.loc["2", "status"] == "FAILED"
    assert frame.loc["1", "metrics.test/av/top1"] == 0.5
    assert frame.loc["2", "params.seed"] == "2"
    assert tracking.runs_frame(store, "empty").empty


def test_reading_a_missing_store_fails_without_creating_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        tracking.runs_frame(tmp_path / "nowhere.db", "t")
    assert not (tmp_path / "nowhere.db").exists()


def _hold_lock_in_subprocess(path: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_identity_held_by_a_live_process_is_busy_and_not_reaped(store: Path) -> None:
    cfg = _cfg(store)
    key = tracking.identity_of(cfg).key
    tracking.ensure_experiment(store, "t")
    path = tracking.lock_path(store, "t", key)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A RUNNING run whose owner is alive (it holds the lock) ...
    run = tracking.client(store).create_run(tracking.ensure_experiment(store, "t"), tags={"fb.identity": key})
    holder = _hold_lock_in_subprocess(path)
    try:
        assert tracking.lock_is_held(store, "t", key)
        assert tracking.reap_dead_runs(store, "t") == []
        with pytest.raises(tracking.RunBusy):
            with tracking.identity_lock(store, "t", key, timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    # ... and once the owner is gone, the same run is dead: reaped as KILLED.
    assert not tracking.lock_is_held(store, "t", key)
    assert tracking.reap_dead_runs(store, "t") == [run.info.run_id]
    reaped = tracking.client(store).get_run(run.info.run_id)
    assert reaped.info.status == "KILLED" and "no live process" in reaped.data.tags["fb.error"]
    assert reaped.data.tags["fb.status"] == "killed" and reaped.info.run_name.startswith("[KILLED] ")


def test_distributed_ranks_above_zero_log_nothing(store: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's DDP launcher gives the copies it starts
    with tracking.tracked_run(_cfg(store)) as tr:
        tr.log_metrics({"test/av/top1": 1.0})
        tr.log_params({"x": 1})
        with pytest.raises(ValueError):
            tr.log_metrics({"bad@name": 1.0})
    assert tr.run_id is None and tracking.runs_frame(store, "t").empty


def test_own_live_run_is_not_reaped(store: Path) -> None:
    with tracking.tracked_run(_cfg(store)) as tr:
        assert tracking.reap_dead_runs(store, "t") == []
        assert tracking.client(store).get_run(tr.run_id).info.status == "RUNNING"


@pytest.mark.slow
def test_two_processes_create_a_new_store_and_experiment_at_once(tmp_path: Path) -> None:
    store = tmp_path / "fresh" / "mlflow.db"
    code = f"from fusionbench import tracking; print(tracking.ensure_experiment({str(store)!r}, 'race'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    ids = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(ids) == 1
