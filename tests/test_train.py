"""Real Lightning fits on the tiny preset, through the CLI entry, recorded in a real MLflow sqlite store.

Every registered fusion must learn the synthetic ``joint`` task (16 classes, chance 1/16) well above chance; the run
record must hold what DESIGN.md promises (params, per-condition metrics, the config artifact, identity tags).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from fusionbench import cli, tracking
from fusionbench.config import load_config
from fusionbench.data.datasets import records_for
from fusionbench.data.fingerprint import identity_hash
from fusionbench.registry import list_fusions

CHANCE = 1 / 16


@pytest.fixture(scope="session")
def joint_env(tmp_path_factory) -> list[str]:
    """Overrides for a 640-clip ``joint`` set (milder noise than the benchmark's, so the tiny preset learns it in
    ~170 steps) and a store, shared by every fit of the session."""
    root = tmp_path_factory.mktemp("train")
    return [
        "preset=tiny",
        f"data.root={root / 'synth'}",
        f"data.cache_dir={root / 'cache'}",
        "data.synth.num_clips=640",
        "data.synth.video_noise=0.1",
        "data.synth.audio_snr_db=10",
        "data.batch_size=32",
        "train.max_epochs=12",
        "train.lr=0.003",
        "train.progress=false",
        f"tracking.store={root / 'mlflow.db'}",
    ]


def _runs(overrides: list[str]):
    cfg = load_config(overrides)
    if not Path(cfg.tracking.store).exists():  # this test run alone: no earlier test has made the store
        return cfg, pd.DataFrame()
    frame = tracking.runs_frame(cfg.tracking.store, cfg.tracking.experiment)
    return cfg, frame


@pytest.mark.parametrize("fusion", list_fusions())
def test_every_fusion_learns_joint_via_cli(fusion, joint_env, capsys):
    overrides = [*joint_env, f"fusion={fusion}"]
    assert cli.main(["train", *overrides]) == 0
    assert "MLflow run" in capsys.readouterr().out
    cfg, frame = _runs(overrides)
    row = frame[frame["tags.fb.fusion"] == fusion].iloc[-1]
    assert row["status"] == "FINISHED"
    top1 = row["metrics.test/av/top1"]
    assert top1 > 3 * CHANCE, f"{fusion} reached only {top1:.3f} on joint (chance {CHANCE:.3f})"


def test_run_record_contents(joint_env):
    overrides = [*joint_env, "fusion=late"]
    cfg, frame = _runs(overrides)
    if frame.empty or "late" not in set(frame["tags.fb.fusion"]):
        assert cli.main(["train", *overrides]) == 0
        cfg, frame = _runs(overrides)
    row = frame[frame["tags.fb.fusion"] == "late"].iloc[-1]
    assert row["tags.fb.config_hash"] == identity_hash(cfg) and row["tags.fb.seed"] == "0"  # config + data
    assert row["tags.fb.dataset"] == "synth-joint"
    assert row["params.train.lr"] == "0.003" and row["params.preset"] == "tiny"
    for condition in ("av", "audio_only", "video_only"):
        for metric in ("top1", "top5", "mAP", "loss"):
            assert 0 <= row[f"metrics.test/{condition}/{metric}"] < 10, (condition, metric)
    for name in ("model/params", "model/gflops", "time/train_s", "val/top1", "train/loss"):
        assert row[f"metrics.{name}"] > 0, name
    assert row["metrics.train/epochs"] == 12  # stop_val_loss off: every epoch ran
    # cost beside accuracy: a training step is > 2 forwards; the clip rate is the clips × epochs over the fit time
    assert row["metrics.model/gflops_fwd_bwd"] > 2 * row["metrics.model/gflops"]
    clips = row["metrics.data/train_clips"] * 12 / row["metrics.time/train_s"]
    assert row["metrics.cost/train_clips_s"] == pytest.approx(clips, rel=0.05)
    assert row["metrics.cost/peak_mem_mb"] >= 0
    # Late fusion's audio-only and video-only logits are its two streams: each sees one factor of 16 classes.
    assert row["metrics.test/audio_only/top1"] < row["metrics.test/av/top1"]
    client = tracking.client(cfg.tracking.store)
    local = Path(client.download_artifacts(row["run_id"], "config.yaml"))
    saved = yaml.safe_load(local.read_text())
    assert saved["fusion"] == "late" and saved["train"]["lr"] == 0.003
    # The data report: one row per clip of the set, each ok (nothing skipped), logged with the run.
    report = pd.read_csv(client.download_artifacts(row["run_id"], "data_report.csv"), keep_default_na=False)
    assert list(report.columns) == ["path", "split", "label", "status", "reason"]
    assert len(report) == len(records_for(cfg.data).clips) and report["path"].is_unique
    assert set(report["status"]) == {"ok"}
    assert row["metrics.data/report/ok"] == len(report) and row["metrics.data/report/skipped"] == 0
    assert sorted(report["split"].unique()) == ["test", "train", "val"]


def test_stop_val_loss_ends_a_solved_run_and_still_tests_it(joint_env):
    """A threshold every first validation passes (val loss < 100) stops after epoch 1; the run is evaluated as usual."""
    overrides = [*joint_env, "fusion=early", "train.stop_val_loss=100", "tracking.experiment=stopping"]
    assert cli.main(["train", *overrides]) == 0
    cfg, frame = _runs(overrides)
    row = frame.iloc[-1]
    assert row["status"] == "FINISHED" and row["metrics.train/epochs"] == 1
    assert 0 <= row["metrics.test/av/top1"] <= 1 and row["params.train.stop_val_loss"] == "100.0"
