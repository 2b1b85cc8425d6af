"""Gradient accumulation: ``train.accumulate=k`` at batch b trains as batch k·b, and the lr rule sees k.

Lightning's ``accumulate_grad_batches`` divides each micro-batch's mean loss by k and steps the optimiser (clipping,
AdamW, the warm-up / cosine schedule, whose length counts optimiser steps) once per k micro-batches, so k consecutive
batches of b (the same shuffled order: one generator) give the gradient of their batch of k·b. Exact when the
training split is a multiple of k·b clips: Lightning's last step of an epoch with fewer than k micro-batches still
divides by k. Measured here (late, early and MBT, 3 epochs of 32 training clips, b = 4, k = 2): every logged metric
within 4.8e-7 of the batch-8 run; the test allows ``TOL`` = 1e-5. ``train.blr``: lr = blr × b × devices × num_nodes × k / 256
(logged as ``train/lr_effective``, the batch as ``train/effective_batch``).
"""
from __future__ import annotations

import pandas as pd
import pytest

from fusionbench import cli, tracking

TOL = 1e-5
BLR = 0.1


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, pd.Series]:
    root = tmp_path_factory.mktemp("accumulate")
    base = ["preset=tiny", "fusion=late", f"data.root={root / 'synth'}", f"data.cache_dir={root / 'cache'}",
            "data.synth.num_clips=46", "train.max_epochs=3", f"train.blr={BLR}", "train.progress=false",
            "train.threads=1", "train.accelerator=cpu", "train.checkpoint_every=0"]
    out = {}
    for name, extra in {"batch8": ["data.batch_size=8"],
                        "batch4x2": ["data.batch_size=4", "train.accumulate=2"]}.items():
        store = root / name / "mlflow.db"
        assert cli.main(["train", *base, *extra, f"tracking.store={store}"]) == 0
        row = tracking.runs_frame(store, "fusionbench").iloc[-1]
        histories = {f"{k}@{m.step}": m.value for k in ("train/loss", "val/loss")
                     for m in tracking.client(store).get_metric_history(row["run_id"], k)}
        out[name] = pd.concat([row, pd.Series(histories)])
    return out


def _metrics(row: pd.Series) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(k, str) and not k.startswith(
        ("run_id", "run_name", "status", "start_time", "end_time", "tags.", "params.", "metrics.time/",
         "metrics.cost/")) and pd.notna(v)}


def test_accumulating_k_batches_of_b_trains_as_one_batch_of_kb(runs) -> None:
    big, accumulated = _metrics(runs["batch8"]), _metrics(runs["batch4x2"])
    assert big.keys() == accumulated.keys()
    assert any(k.startswith("train/loss@") for k in big) and "metrics.test/av/loss" in big
    diffs = {k: abs(big[k] - accumulated[k]) for k in big}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= TOL, f"{worst}: {big[worst]} vs {accumulated[worst]}"


def test_the_lr_rule_uses_the_effective_batch(runs) -> None:
    for row in runs.values():
        assert row["metrics.train/effective_batch"] == 8  # 8 × 1 × 1 and 4 × 1 × 2
        assert row["metrics.train/lr_effective"] == pytest.approx(BLR * 8 / 256)
    assert runs["batch4x2"]["params.train.accumulate"] == "2"


def test_every_factor_of_the_effective_batch_counts_and_one_node_keeps_old_identities(tmp_path) -> None:
    from fusionbench.config import load_config
    from fusionbench.tasks.classify import effective_batch, peak_lr
    from fusionbench.tracking import identity_of

    base = ["preset=tiny", f"data.root={tmp_path}", "train.blr=0.1"]
    cfg = load_config([*base, "train.devices=2", "train.num_nodes=3", "train.accumulate=2"]).train
    assert effective_batch(cfg, 4) == 4 * 2 * 3 * 2 and peak_lr(cfg, 4) == pytest.approx(0.1 * 48 / 256)
    # train.num_nodes (added after runs were recorded) enters the run identity only away from its default 1
    one = identity_of(load_config(base))
    assert identity_of(load_config([*base, "train.num_nodes=1"])) == one
    assert identity_of(load_config([*base, "train.num_nodes=2"])) != one
