"""Multi-process DDP on CPU (gloo), real processes: Lightning's own DDP launcher (one node, and two nodes on 127.0.0.1),
torchrun, and SLURM's environment.

Two ranks at batch b train as one process at batch 2b (``fusionbench.data.shards``: the union of the ranks' batches
is the one process's batch; DDP averages the ranks' mean losses): every metric the run logs (the per-epoch train and
val losses, the val metrics, every test metric) agrees within ``TOL`` = 1e-5 absolute. Measured on this tiny set
(late fusion, 3 epochs, 32 training / 7 val / 7 test clips): the two runs agreed to the bit (difference 0); the
tolerance leaves room for the gloo all-reduce's float summation order. Only rank 0 records the run (one FINISHED
MLflow run, nothing left RUNNING); it scores the test split alone after fit, so every test clip is counted once
(7 clips: a padding sampler on 2 ranks would make 8); the validation split (7 clips) is sharded unpadded, which
the equal val losses prove.
"""
from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fusionbench import cli, tracking
from fusionbench.data.shards import rank_sampler

BIN = Path(sys.executable).parent
FUSIONBENCH, TORCHRUN = str(BIN / "fusionbench"), str(BIN / "torchrun")
TOL = 1e-5  # absolute, on every logged metric (see the module docstring)
TEST_CLIPS = 7  # data.synth.num_clips=46: 32 train, 7 val, 7 test
RUN_TIMEOUT_S = 600  # a loaded 2-core machine; a hang (a collective no other rank joins) fails here
DIST_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
            "MASTER_PORT", "PL_GLOBAL_SEED")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("ddp")
    return ["preset=tiny", "fusion=late", f"data.root={root / 'synth'}", f"data.cache_dir={root / 'cache'}",
            "data.synth.num_clips=46", "train.max_epochs=3", "train.lr=0.003", "train.progress=false",
            "train.threads=1", "train.accelerator=cpu", "train.checkpoint_every=0"]


def _store(base: list[str], name: str) -> str:
    root = Path(next(o for o in base if o.startswith("data.root=")).split("=", 1)[1]).parent
    return str(root / name / "mlflow.db")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV and not k.startswith("SLURM_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _finish(procs: list[subprocess.Popen]) -> str:
    outs = []
    for proc in procs:
        try:
            outs.append(proc.communicate(timeout=RUN_TIMEOUT_S)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError("a distributed run hung (killed after the timeout)") from None
    text = "\n".join(outs)
    assert all(p.returncode == 0 for p in procs), text[-4000:]
    return text


def _launch(cmd: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env or _clean_env())
    return _finish([proc])


def _frame(store: str) -> pd.DataFrame:
    return tracking.runs_frame(store, "fusionbench")


def _metrics(store: str) -> dict[str, float]:
    """The one run's metrics (time and cost columns left out: they measure the machine) and metric histories."""
    row = _frame(store).iloc[-1]
    out = {k[len("metrics."):]: float(v) for k, v in row.items()
           if k.startswith("metrics.") and not k.startswith(("metrics.time/", "metrics.cost/")) and pd.notna(v)}
    c = tracking.client(store)
    for name in ("train/loss", "val/loss", "val/top1"):
        for m in c.get_metric_history(row["run_id"], name):
            out[f"{name}@{m.step}"] = m.value
    return out


def _assert_same(a: dict[str, float], b: dict[str, float]) -> float:
    assert a.keys() == b.keys(), a.keys() ^ b.keys()
    diffs = {k: abs(a[k] - b[k]) for k in a}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= TOL, f"{worst}: {a[worst]} vs {b[worst]}"
    return diffs[worst]


def _one_run(store: str, out: str) -> pd.Series:
    """Exactly one run in the store, FINISHED; exactly one process said it recorded one."""
    frame = _frame(store)
    assert len(frame) == 1, frame[["run_id", "status"]]
    row = frame.iloc[0]
    assert row["status"] == "FINISHED" and row["tags.fb.status"] == "finished"
    assert re.findall(r"MLflow run (\S+)", out) == [row["run_id"]]  # rank 1 prints none (not "MLflow run None")
    return row


@pytest.fixture(scope="module")
def one_process(base) -> str:
    """The reference: one process at batch 8 (in this process: it also generates the data set)."""
    store = _store(base, "one")
    assert cli.main(["train", *base, "data.batch_size=8", f"tracking.store={store}"]) == 0
    return store


@pytest.fixture(scope="module")
def lightning_ddp(base, one_process) -> tuple[str, str]:
    """Two processes at batch 4 through Lightning's DDP launcher (it starts rank 1 as a copy of the command)."""
    store = _store(base, "ddp")
    out = _launch([FUSIONBENCH, "train", *base, "data.batch_size=4", "train.devices=2", "train.strategy=ddp",
                   f"tracking.store={store}"])
    return store, out


# ------------------------------------------------------------------------------------------------ the samplers


class _Ranks:  # the two attributes of a Trainer that rank_sampler reads
    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size, self.global_rank = world_size, global_rank


@pytest.mark.parametrize("clips", [32, 28])  # the last batch full, then short
def test_rank_batches_together_are_the_single_process_batch(clips: int) -> None:
    """Epoch after epoch, as Lightning reads a sized loader (len(loader) batches, never one past): the two ranks'
    batches of 4 together are the one process's batch of 8, and the three shuffling generators stay in step."""
    data, b, world = list(range(clips)), 4, 2

    def loader(batch: int, trainer: _Ranks | None = None) -> torch.utils.data.DataLoader:
        gen = torch.Generator().manual_seed(3)
        return torch.utils.data.DataLoader(data, batch_size=batch, sampler=rank_sampler(data, True, gen, trainer),
                                           generator=gen)

    single, ranks = loader(b * world), [loader(b, _Ranks(world, r)) for r in range(world)]
    for epoch in range(3):
        batches = [list(itertools.islice(iter(x), len(x))) for x in (single, *ranks)]
        assert all(len(x) == len(batches[0]) for x in batches)
        for step, (whole, *parts) in enumerate(zip(*batches)):
            assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist()), (epoch, step)
        states = [x.generator.get_state() for x in (single, *ranks)]
        assert all(torch.equal(states[0], s) for s in states[1:]), epoch


def test_validation_shards_cover_every_clip_once() -> None:
    data = list(range(7))
    shards = [list(rank_sampler(data, False, None, _Ranks(2, r))) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == data  # 4 + 3: unpadded
    assert list(rank_sampler(data, False, None)) == data  # one process: every clip, in order


def test_process_rank_reads_the_cluster_environments(monkeypatch) -> None:
    for var in (*DIST_ENV, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(var, raising=False)
    assert tracking.process_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert tracking.process_rank() == 0  # no SLURM_NTASKS: not an srun launch
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert tracking.process_rank() == 1  # srun's second task
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: Lightning launches the ranks itself
    assert tracking.process_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")  # ... and its copies get LOCAL_RANK
    assert tracking.process_rank() == 1
    monkeypatch.setenv("RANK", "0")  # torchrun's global rank wins
    assert tracking.process_rank() == 0


# ---------------------------------------------------------------------------------------- real distributed runs


def test_two_ranks_at_batch_b_match_one_process_at_2b(one_process, lightning_ddp) -> None:
    ddp, single = _metrics(lightning_ddp[0]), _metrics(one_process)
    assert ddp["train/effective_batch"] == single["train/effective_batch"] == 8
    worst = _assert_same(ddp, single)
    print(f"largest difference over {len(ddp)} metrics: {worst:.2e}")


def test_only_rank_zero_records_the_run(lightning_ddp) -> None:
    store, out = lightning_ddp
    row = _one_run(store, out)
    assert row["params.train.devices"] == "2" and row["params.data.batch_size"] == "4"
    assert pd.notna(row["metrics.test/av/top1"]) and pd.notna(row["metrics.time/test_s"])  # rank 0 tested


def test_every_test_clip_is_scored_once(lightning_ddp) -> None:
    row = _frame(lightning_ddp[0]).iloc[0]
    for condition in ("av", "audio_only", "video_only"):
        assert row[f"metrics.test/{condition}/clips"] == TEST_CLIPS


@pytest.mark.slow  # ~30 s on a loaded 2-core machine; test_process_rank_reads_the_cluster_environments is the fast check
def test_torchrun_ranks_above_zero_log_nothing(base, lightning_ddp) -> None:
    """torchrun starts both ranks (RANK, LOCAL_RANK, WORLD_SIZE; Lightning's TorchElasticEnvironment): one run,
    rank 0's, the same metrics as the Lightning-launched run."""
    store = _store(base, "torchrun")
    out = _launch([TORCHRUN, "--standalone", "--nproc_per_node=2", FUSIONBENCH, "train", *base, "data.batch_size=4",
                   "train.devices=2", "train.strategy=ddp", f"tracking.store={store}"])
    _one_run(store, out)
    _assert_same(_metrics(store), _metrics(lightning_ddp[0]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_srun_environment_ranks_above_zero_log_nothing(base, lightning_ddp) -> None:
    """Two processes with the variables ``srun --ntasks-per-node=2`` sets (Lightning's SLURMEnvironment: no launcher,
    each process is the rank SLURM_PROCID says): one run, rank 0's, the same metrics."""
    store = _store(base, "slurm")
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = _clean_env(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", SLURM_NNODES="1", SLURM_NODEID="0",
                         SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_JOB_NAME="fusionbench-test",
                         SLURM_JOB_ID="4242", SLURM_NODELIST="127.0.0.1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([FUSIONBENCH, "train", *base, "data.batch_size=4", "train.devices=2",
                                       "train.strategy=ddp", f"tracking.store={store}"], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env))
    out = _finish(procs)
    _one_run(store, out)
    _assert_same(_metrics(store), _metrics(lightning_ddp[0]))


@pytest.mark.slow
def test_two_nodes_of_one_device_each(base, lightning_ddp) -> None:
    """``train.num_nodes=2 train.devices=1``: one command per node (NODE_RANK, MASTER_ADDR / MASTER_PORT, as on two
    machines; here both on 127.0.0.1): one run, node 0's, the same metrics and effective batch."""
    store = _store(base, "nodes")
    port = str(_free_port())
    procs = [subprocess.Popen([FUSIONBENCH, "train", *base, "data.batch_size=4", "train.devices=1", "train.num_nodes=2",
                               "train.strategy=ddp", f"tracking.store={store}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=_clean_env(NODE_RANK=str(node), MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for node in range(2)]
    out = _finish(procs)
    _one_run(store, out)
    _assert_same(_metrics(store), _metrics(lightning_ddp[0]))
