"""Divergence: a NaN / inf loss stops the fit with TrainingDiverged and the run is recorded FAILED + fb.status=diverged
(real tiny Lightning fits on the session's synthetic set, a real sqlite store); a sweep reports such a cell as diverged
and does not re-run it, while failed and killed cells still run again."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from fusionbench import sweep, tracking, train
from fusionbench.config import load_config
from fusionbench.errors import TrainingDiverged
from fusionbench.tasks.divergence import DivergenceCheck
from sweep_runners import fresh_store

THIS = "test_divergence"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return fresh_store(tmp_path_factory.mktemp("diverge"))


@pytest.fixture()
def tiny(tiny_synth_root, store, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "diverge-cache"

    def overrides(*extra: str) -> list[str]:
        return ["preset=tiny", "fusion=late", f"data.root={tiny_synth_root}", f"data.cache_dir={cache}",
                "data.synth.num_clips=40", "data.batch_size=8", "train.max_epochs=1", "train.progress=false",
                "eval.conditions=[av]", f"tracking.store={store}", "tracking.experiment=diverge", *extra]

    return overrides


def _run(store: Path, run_id: str):
    return tracking.client(store).get_run(run_id)


def _latest(store: Path, experiment: str = "diverge"):
    return tracking.search_all(store, experiment)[-1]


def test_huge_lr_diverges_and_is_recorded_as_diverged(tiny, store) -> None:
    """lr 1e30 without gradient clipping: the first AdamW step sends the weights to ±1e30, the next loss is inf/NaN."""
    cfg = load_config(tiny("train.lr=1e30", "train.grad_clip=0", "train.warmup_frac=0"))
    with pytest.raises(TrainingDiverged) as caught:
        train.run(cfg)
    exc = caught.value
    assert exc.stage == "train" and not math.isfinite(exc.value) and exc.step >= 1
    run = _latest(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["fb.status"] == "diverged"
    assert run.data.tags["fb.error"] == f"diverged: train loss {exc.value} at step {exc.step}"
    assert run.info.run_name == f"[DIVERGED] {tracking.identity_of(cfg).run_name}"
    assert "test/av/top1" not in run.data.metrics  # never evaluated, never ranked with a top-1
    assert tracking.diverged_identities(store, "diverge") == {tracking.identity_of(cfg).key: run.data.tags["fb.error"]}
    assert tracking.identity_of(cfg).key not in tracking.finished_identities(store, "diverge")


def test_normal_run_is_finished(tiny, store) -> None:
    cfg = load_config(tiny("train.lr=0.003", "seed=1"))
    run = _run(store, train.run(cfg))
    assert run.info.status == "FINISHED" and run.data.tags["fb.status"] == "finished"
    assert run.info.run_name == tracking.identity_of(cfg).run_name  # no marker
    assert math.isfinite(run.data.metrics["test/av/top1"])


def test_non_finite_validation_loss_diverges(tiny) -> None:
    """A model whose weights are NaN gives a NaN validation loss: the check at validation end raises (stage val)."""
    cfg = load_config(tiny())
    datamodule, task = train.build(cfg)
    with torch.no_grad():
        for p in task.model.parameters():
            p.fill_(float("nan"))
    trainer = train._trainer(cfg, [DivergenceCheck()])
    with pytest.raises(TrainingDiverged, match=r"^diverged: val loss nan at step 0$"):
        trainer.validate(task, datamodule=datamodule, verbose=False)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 2.5])
def test_check_raises_for_every_non_finite_loss_and_only_for_those(value: float) -> None:
    check, trainer = DivergenceCheck(), L.Trainer(logger=False, enable_progress_bar=False)
    loss = torch.tensor(value)
    if math.isfinite(value):
        check.on_train_batch_end(trainer, None, {"loss": loss}, None, 0)
        trainer.callback_metrics["val/loss"] = loss
        check.on_validation_end(trainer, None)
        return
    with pytest.raises(TrainingDiverged, match=f"^diverged: train loss {value} at step 0$"):
        check.on_train_batch_end(trainer, None, {"loss": loss}, None, 0)
    trainer.callback_metrics["val/loss"] = loss
    with pytest.raises(TrainingDiverged, match=f"^diverged: val loss {value} at step 0$"):
        check.on_validation_end(trainer, None)


# ------------------------------------------------------------------------------------------------------ sweeps


def diverging_runner(cfg):
    """A sweep runner: a tracked run that diverges when ``data.manifest`` says ``diverge``, fails on ``raise``."""
    with tracking.tracked_run(cfg) as tr:
        if cfg.data.manifest == "diverge":
            raise TrainingDiverged("train", 12, float("nan"))
        if cfg.data.manifest == "raise":
            raise RuntimeError("planned failure")
        tr.log_metrics({"test/av/top1": 0.5})
        return tr.run_id


def test_sweep_reports_diverged_and_does_not_rerun_it(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    grid = ["data.manifest=diverge,raise,ok,killed", f"tracking.store={store}", "tracking.experiment=sw"]
    killed_cell = sweep.plan(sweep.expand_grid(grid))[3]
    with pytest.raises(KeyboardInterrupt):  # a KILLED run of the last cell, from before the sweep
        with tracking.tracked_run(killed_cell.cfg):
            raise KeyboardInterrupt
    runner = f"{THIS}:diverging_runner"
    report = sweep.run_sweep(grid, workers=0, runner=runner, log=lambda line: None)
    assert [o.status for o in report.outcomes] == ["diverged", "failed", "finished", "finished"]
    assert report.diverged[0].error == "diverged: train loss nan at step 12"
    assert not report.ok and len(report.failed) == 1  # the raise cell fails the sweep ...
    # ... a diverged cell alone does not: it is a result of its config, listed apart
    assert sweep.SweepReport(1, [sweep.CellOutcome("x", [], "diverged", error="diverged: ...")]).ok
    assert "DIVERGED" in report.summary() and "diverged: train loss nan at step 12" in report.summary()

    again = sweep.run_sweep(grid, workers=0, runner=runner, log=lambda line: None)
    statuses = {o.overrides[0]: o.status for o in again.outcomes}
    assert statuses == {"data.manifest=diverge": "diverged", "data.manifest=raise": "failed",
                        "data.manifest=ok": "skipped", "data.manifest=killed": "skipped"}
    repeat = again.diverged[0]
    assert repeat.run_id is None and "not re-run" in repeat.error and "deterministic" in repeat.error
    assert "diverged: train loss nan at step 12" in repeat.error
    frame = tracking.runs_frame(store, "sw")
    per_cell = frame.groupby("params.data.manifest")["tags.fb.status"].apply(sorted).to_dict()
    assert per_cell == {"diverge": ["diverged"], "raise": ["failed", "failed"], "ok": ["finished"],
                        "killed": ["finished", "killed"]}  # the failed and the killed cells ran again
