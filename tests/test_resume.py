"""Checkpoints and resume inside a run (fusionbench.tasks.checkpoints): the resume rule, weights_only-loadable random
state, and a real run SIGKILLed after its first checkpoint, started again, ending with an uninterrupted run's exact
test metrics."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionbench import tracking
from fusionbench.config import load_config
from fusionbench.tasks import checkpoints

FUSIONBENCH = str(Path(sys.executable).parent / "fusionbench")


def _env(root: Path) -> list[str]:
    return ["preset=tiny", "fusion=late", f"data.root={root / 'synth'}", f"data.cache_dir={root / 'cache'}",
            "data.synth.num_clips=120", "data.synth.video_noise=0.1", "data.synth.audio_snr_db=10",
            # SpecAugment and a random window per clip: training draws from the global RNG, so resume must restore it
            "data.audio.freqm=4", "data.audio.timem=8", "data.train_windows=2", "data.batch_size=16",
            "train.max_epochs=6", "train.lr=0.003", "train.progress=false", "train.threads=1",
            f"tracking.store={root / 'mlflow.db'}"]


# ----------------------------------------------------------------------------------------------- the resume rule


def test_resume_point_prefers_last_then_newest_periodic(tmp_path):
    assert checkpoints.resume_point(tmp_path) is None  # nothing: a fresh start
    for epoch in (0, 1, 2):
        (tmp_path / f"epoch{epoch:04d}.ckpt").write_bytes(b"x")
    assert checkpoints.resume_point(tmp_path) == tmp_path / "epoch0002.ckpt"
    (tmp_path / "last.ckpt").symlink_to("epoch0001.ckpt")  # killed between a periodic save and its link
    assert checkpoints.resume_point(tmp_path) == (tmp_path / "epoch0001.ckpt").resolve()
    (tmp_path / "epoch0001.ckpt").unlink()  # a dangling link: the newest periodic one
    assert checkpoints.resume_point(tmp_path) == tmp_path / "epoch0002.ckpt"


def test_checkpoint_folder_is_per_identity(tmp_path):
    base = _env(tmp_path)
    folder = checkpoints.checkpoint_dir(load_config(base))
    assert folder.parent.parent == tmp_path / "checkpoints"  # next to the store, under the experiment
    assert checkpoints.checkpoint_dir(load_config(base)) == folder
    # a changed config, seed or experiment is another run: it never resumes this one's checkpoints
    for change in ("train.lr=0.002", "seed=1", "fusion=mbt", "tracking.experiment=other"):
        assert checkpoints.checkpoint_dir(load_config([*base, change])) != folder, change
    # how often checkpoints are written does not change what a run computes: same identity, same folder
    assert checkpoints.checkpoint_dir(load_config([*base, "train.checkpoint_every=3"])) == folder


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    saved = checkpoints._rng_state(gen)
    torch.save({checkpoints.STATE_KEY: {"rng": saved}}, tmp_path / "c.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)[checkpoints.STATE_KEY]["rng"]
    checkpoints._set_rng_state(loaded)
    gen.set_state(loaded["train_loader"])
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])


# ----------------------------------------------------------------------------------------- a killed, resumed run


def _train(overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen([FUSIONBENCH, "train", *overrides], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _finished(cfg) -> dict:
    runs = tracking.search_all(cfg.tracking.store, cfg.tracking.experiment, "attributes.status = 'FINISHED'")
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_metrics(tmp_path):
    base = _env(tmp_path)
    straight = [*base, "tracking.experiment=straight"]
    proc = _train(straight)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    reference = _finished(load_config(straight))

    killed = [*base, "tracking.experiment=killed"]
    cfg = load_config(killed)
    folder = checkpoints.checkpoint_dir(cfg)
    proc = _train(killed)
    while not (folder / "epoch0000.ckpt").exists():  # the first checkpoint: kill it there
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (folder / "epoch0005.ckpt").exists()  # killed mid-training, not after it
    proc = _train(killed)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    assert "resumed from" in out
    resumed = _finished(cfg)

    tags = resumed.data.tags
    assert tags["fb.resumed_from_run"] != resumed.info.run_id and int(tags["fb.resumed_epochs"]) >= 1
    assert "fb.resumed_from" in tags and "fb.resumed_from" not in reference.data.tags
    test = {k: v for k, v in reference.data.metrics.items() if k.startswith("test/")}
    assert test and {k: resumed.data.metrics[k] for k in test} == test  # exactly equal on CPU
    assert resumed.data.metrics["train/epochs"] == reference.data.metrics["train/epochs"] == 6
    # the finished run logged its checkpoints and left no folder behind: a later run starts afresh
    logged = sorted(p.name for p in (tracking.TrackedRun(tracking.client(cfg.tracking.store), resumed.info.run_id,
                                                         None).artifact_dir / "checkpoints").iterdir())
    assert logged[-1] == "epoch0005.ckpt" and not folder.exists()
    ckpt = torch.load(tracking.TrackedRun(tracking.client(cfg.tracking.store), resumed.info.run_id, None)
                      .artifact_dir / "checkpoints" / "epoch0005.ckpt", weights_only=True)
    assert ckpt["epoch"] == 5 and "optimizer_states" in ckpt and "lr_schedulers" in ckpt
