"""``fusionbench sweep --dry-run``: every cell validated and listed with whether it already finished; nothing runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusionbench import cli, tracking
from fusionbench.config import load_config
from fusionbench.errors import TrainingDiverged


def _store_args(store: Path) -> list[str]:
    return [f"tracking.store={store}", "tracking.experiment=dry"]


def test_dry_run_lists_cells_and_which_finished_and_runs_nothing(capsys, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    done = load_config(["preset=tiny", "seed=1", *_store_args(store)])
    with tracking.tracked_run(done):  # a FINISHED run of the seed=1 cell's identity (nothing trained: only its record)
        pass
    diverged = load_config(["preset=tiny", "seed=2", *_store_args(store)])
    with pytest.raises(TrainingDiverged), tracking.tracked_run(diverged):  # seed=2's identity diverged once
        raise TrainingDiverged("train", 3, float("nan"))
    before = tracking.runs_frame(store, "dry")
    assert cli.main(["sweep", "--dry-run", "preset=tiny", "seed=0:4", *_store_args(store)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if "preset=tiny" in line]
    assert [r.split()[0] for r in rows] == ["to", "finished", "diverged", "to"]  # what a real sweep would do
    assert tracking.identity_of(done).key in rows[1] and tracking.identity_of(diverged).key in rows[2]
    assert out[-1].startswith("4 cells: 1 already finished, 1 diverged (not re-run), 2 to run")
    after = tracking.runs_frame(store, "dry")
    assert list(after["run_id"]) == list(before["run_id"])  # no run started, none changed
    assert sorted(after["status"]) == ["FAILED", "FINISHED"]


def test_dry_run_validates_every_cell_and_creates_no_store(capsys, tmp_path: Path) -> None:
    store = tmp_path / "new" / "mlflow.db"
    assert cli.main(["sweep", "--dry-run", "seed=0,1", *_store_args(store)]) == 0
    assert "2 cells: 0 already finished, 0 diverged (not re-run), 2 to run" in capsys.readouterr().out
    assert not store.exists()
    assert cli.main(["sweep", "--dry-run", "data.batch_size=16,0,32", *_store_args(store)]) == 2
    captured = capsys.readouterr()
    assert "to run" not in captured.out  # the bad cell fails the listing before any cell is listed
    assert captured.err.strip().endswith("sweep cell 2/3 [data.batch_size=0 tracking.store=" + str(store) +
                                         " tracking.experiment=dry]: data.batch_size=0 must be > 0")


def test_dry_run_reads_the_experiment_files_grid(capsys, tmp_path: Path) -> None:
    yaml = tmp_path / "grid.yaml"
    yaml.write_text("preset: tiny\nsweep:\n  fusion: [late, mbt]\n  seed: [0, 1]\n")
    assert cli.main(["sweep", "--dry-run", "-e", str(yaml), *_store_args(tmp_path / "mlflow.db")]) == 0
    out = capsys.readouterr().out
    assert "4 cells: 0 already finished, 0 diverged (not re-run), 4 to run" in out and "fusion=mbt seed=1" in out
