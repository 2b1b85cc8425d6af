"""sweep --launcher slurm|local: cells as real submitit jobs (its local executor here), the sweep's skip / reap rules,
launcher options validated before anything is submitted, the SLURM script they make, multi-node store refusal."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from fusionbench import slurm, sweep, tracking
from fusionbench.config import ConfigError
from sweep_runners import fresh_store

TESTS = Path(__file__).resolve().parent
RUNNER = "sweep_runners:run"


@pytest.fixture(autouse=True)
def _runner_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's job processes import the test runner (tests/sweep_runners.py) as a cluster job would: from the
    environment the job inherits."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))


def _grid(store: Path, *items: str) -> list[str]:
    """Cells of the cheap runner (``data.manifest`` holds its directives: no data set is generated)."""
    manifest = [] if any(i.startswith("data.manifest=") for i in items) else ["data.manifest=sleep=0"]
    return [*items, *manifest, f"tracking.store={store}", "tracking.experiment=jobs"]


def _job_folders(lines: list[str]) -> list[Path]:
    return [Path(line.split(", log ")[1].split(")")[0]) for line in lines if "] start " in line]


def test_local_launcher_runs_each_cell_as_a_submitit_job_and_a_resubmit_skips(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    lines: list[str] = []
    # rendezvous=2: each job waits until two processes are inside a run, so both jobs ran at once
    grid = _grid(store, "seed=0,1", "data.manifest=rendezvous=2")
    options = ["launcher.array_parallelism=2", "launcher.timeout_min=5"]
    report = sweep.run_sweep(grid, runner=RUNNER, launcher="local", launcher_options=options, log=lines.append)
    assert report.ok and len(report.finished) == 2, report.summary()
    runs = tracking.runs_frame(store, "jobs")
    assert list(runs["status"]) == ["FINISHED"] * 2 and runs["tags.fb.identity"].is_unique
    assert set(runs["run_id"]) == {o.run_id for o in report.finished}
    folders = _job_folders(lines)
    assert len(set(folders)) == 2 and all(f.parent == store.parent / "submitit" / "jobs" for f in folders)
    for folder in folders:  # each job its own folder: its pickled result says it ran the cell
        (result,) = folder.glob("*_0_result.pkl")
        outcome, (status, run_id, _) = pickle.loads(result.read_bytes())
        assert outcome == "success" and status == "finished" and run_id in set(runs["run_id"])
    assert any("local jobs through submitit, 2 at a time" in line for line in lines)

    again: list[str] = []
    report = sweep.run_sweep(grid, runner=RUNNER, launcher="local", launcher_options=options, log=again.append)
    assert len(report.skipped) == 2 and not report.finished and not _job_folders(again)  # nothing submitted
    assert len(tracking.runs_frame(store, "jobs")) == 2
    assert set((store.parent / "submitit" / "jobs").iterdir()) == set(folders)


@pytest.mark.slow  # two sweeps of real jobs: ~25 s on a loaded 2-core box
def test_a_job_that_dies_fails_its_cell_and_run_and_the_next_sweep_runs_it_again(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    grid = _grid(store, "data.manifest=exit_once")  # os._exit inside the run: the job dies, its run stays RUNNING
    options = {"timeout_min": 5}
    report = sweep.run_sweep(grid, runner=RUNNER, launcher="local", launcher_options=options, log=lambda _: None)
    (failed,) = report.failed
    assert "ended without a result" in failed.error and "UncompletedJobError" in failed.error
    (run,) = tracking.search_all(store, "jobs")
    assert run.info.status == "FAILED" and "ended without a result" in run.data.tags["fb.error"]
    again = sweep.run_sweep(grid, runner=RUNNER, launcher="local", launcher_options=options, log=lambda _: None)
    assert len(again.finished) == 1 and again.ok
    assert sorted(r.info.status for r in tracking.search_all(store, "jobs")) == ["FAILED", "FINISHED"]


@pytest.mark.slow  # a job of two real task processes: ~15 s on a loaded 2-core box
def test_a_multi_task_job_runs_the_cell_on_every_task_and_only_rank_0_records_it(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    lines: list[str] = []
    report = sweep.run_sweep(_grid(store, "seed=3", "train.devices=2", "train.strategy=ddp"), runner=RUNNER,
                             launcher="local", log=lines.append,
                             launcher_options={"tasks_per_node": 2, "timeout_min": 5})
    assert len(report.finished) == 1, report.summary()
    assert len(tracking.search_all(store, "jobs")) == 1  # rank 1 logged nothing (a NullRun)
    (folder,) = _job_folders(lines)
    results = {p.name.split("_")[1]: pickle.loads(p.read_bytes()) for p in folder.glob("*_result.pkl")}
    assert results["0"] == ("success", ("finished", report.finished[0].run_id, None))
    assert results["1"] == ("success", ("rank", None, None))  # trained, no lock, no run of its own


# --------------------------------------------------------------------------------------- mistakes before submitting


@pytest.mark.parametrize("options, message", [
    (["launcher.partiton=gpu"], r"unknown launcher key 'launcher.partiton'; valid keys: partition, account, .*"
                                r"timeout_min, .*gpus_per_node, .*array_parallelism"),
    (["launcher.timeout_min=4h"], r"launcher.timeout_min='4h' is not an integer"),
    (["launcher.array_parallelism=0"], r"launcher.array_parallelism must be >= 1"),
    (["partition=gpu"], r"not launcher.key=value"),
    (["launcher.tasks_per_node=2"], r"tasks_per_node=2 .* train.devices=1.*train.devices=2 train.strategy=ddp"),
    (["launcher.nodes=2"], r"launcher.nodes > 1 needs --launcher slurm"),
])
def test_launcher_mistakes_fail_before_anything_is_submitted(tmp_path: Path, options: list[str],
                                                             message: str) -> None:
    store = tmp_path / "results" / "mlflow.db"
    with pytest.raises(ConfigError, match=message):
        sweep.run_sweep(_grid(store, "seed=0,1"), runner=RUNNER, launcher="local", launcher_options=options)
    assert not store.parent.exists()  # no store, no submitit folder, no job


def test_launcher_options_need_a_submitit_launcher_and_the_cli_splits_them_off_the_grid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"launcher.partition needs --launcher local or slurm"):
        sweep.run_sweep(_grid(tmp_path / "s.db"), runner=RUNNER, launcher_options=["launcher.partition=gpu"])
    with pytest.raises(ConfigError, match=r"unknown launcher 'pbs'; valid: workers, local, slurm"):
        sweep.run_sweep(_grid(tmp_path / "s.db"), runner=RUNNER, launcher="pbs")
    grid, options = slurm.split_options(["fusion=late,mbt", "launcher.partition=gpu", "seed=0:2"])
    assert grid == ["fusion=late,mbt", "seed=0:2"] and options == ["launcher.partition=gpu"]
    assert not (tmp_path / "s.db").exists()


def test_slurm_options_become_the_sbatch_script_submitit_writes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The options through submitit's own SLURM executor and its sbatch text. No SLURM here: only the executor's probe
    for ``srun`` is bypassed; nothing is submitted."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))

    options = slurm.parse_options(["launcher.partition=gpu", "launcher.timeout_min=90", "launcher.gpus_per_node=4",
                                   "launcher.cpus_per_task=8", "launcher.mem_gb=64", "launcher.array_parallelism=3",
                                   "launcher.account=proj1"], "slurm")
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(**slurm.executor_parameters(options, "slurm", "fb-test"))
    text = _make_sbatch_string(command="python -m x", folder=str(tmp_path / "%j"), map_count=10,
                               **executor._executor.parameters)
    for line in ["--partition=gpu", "--time=90", "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=8",
                 "--mem=64GB", "--array=0-9%3", "--account=proj1", "--job-name=fb-test"]:
        assert f"#SBATCH {line}\n" in text, line


def test_slurm_jobs_train_on_the_nodes_the_run_asks_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"launcher.nodes=2 but the run trains on 1 node"):
        sweep.run_sweep(_grid("http://127.0.0.1:9", "seed=0"), runner=RUNNER, launcher="slurm",
                        launcher_options={"nodes": 2})


def test_slurm_refuses_a_sqlite_store_before_submitting(tmp_path: Path) -> None:
    store = tmp_path / "results" / "mlflow.db"
    with pytest.raises(ConfigError, match=r"is a sqlite file on this machine's disk.*, which other nodes do not see; "
                                          r"a multi-node sweep needs an MLflow server: mlflow server .*"
                                          r"tracking.store=http://"):
        sweep.run_sweep(_grid(store, "seed=0,1"), runner=RUNNER, launcher="slurm")
    assert not store.parent.exists()


def test_a_sqlite_file_on_a_network_disk_is_named_so() -> None:
    mounts = ("/dev/sda1 / ext4 rw,relatime 0 0\n"
              "fs01:/export/home /home nfs4 rw,vers=4.2 0 0\n"
              "scratch@o2ib:/scratch /scratch lustre rw,flock 0 0\n"
              "/dev/sdb1 /home/me/local\\040disk xfs rw 0 0\n")
    assert tracking.filesystem_type("/home/me/results/mlflow.db", mounts) == "nfs4"
    assert tracking.filesystem_type("/home/me/local disk/mlflow.db", mounts) == "xfs"  # the longest mount point
    assert tracking.filesystem_type("/scratch/x/mlflow.db", mounts) == "lustre"
    assert tracking.filesystem_type("/opt/mlflow.db", mounts) == "ext4"
    with pytest.raises(ConfigError, match=r"/home/me/results/mlflow.db is a sqlite file on a network disk \(nfs4\), "
                                          r"where sqlite's locking is unsafe"):
        tracking.check_shared_store("/home/me/results/mlflow.db", mounts)
    tracking.check_shared_store("http://tracking.cluster:5000", mounts)  # a server is what they share
    assert tracking.filesystem_type(Path.cwd()) != ""  # this machine's /proc/mounts is read
