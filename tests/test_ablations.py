"""reports.ablations: runs of a real sqlite store → one row per study and setting, the default run in every study it
belongs to, the interval against scipy's t, failed runs left out, DeepAVFusion's settings as written."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from fusionbench import tracking
from fusionbench.reports.ablations import ablation_table

EXP = "ablations"


def _run(client, exp_id: str, fusion: str, model: dict[str, str], top1: float, gflops: float,
         status: str = "FINISHED") -> None:
    from mlflow.entities import Metric, Param, RunTag

    run_id = client.create_run(exp_id, tags={"fb.fusion": fusion}).info.run_id
    params = [Param(f"model.{k}", v) for k, v in model.items()] or [Param("model", "{}")]
    client.log_batch(run_id, metrics=[Metric("test/av/top1", top1, 0, 0), Metric("model/gflops", gflops, 0, 0)],
                     params=params, tags=[RunTag("fb.status", status.lower())])
    client.set_terminated(run_id, status)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("abl") / "mlflow.db")
    client, exp_id = tracking.client(store), tracking.ensure_experiment(store, EXP)
    for top1 in (0.70, 0.74, 0.81):  # mbt defaults: Lf = 2·4 // 3 = 2, B = 4
        _run(client, exp_id, "mbt", {}, top1, 0.018)
    _run(client, exp_id, "mbt", {"fusion_layer": "0"}, 0.60, 0.020)
    _run(client, exp_id, "mbt", {"fusion_layer": "0"}, 0.10, 0.020, status="FAILED")
    _run(client, exp_id, "mbt", {"num_bottlenecks": "8"}, 0.50, 0.019)
    _run(client, exp_id, "mid", {"fusion_layer": "4"}, 0.75, 0.016)
    for layers in ("all", "0-2", "none"):
        _run(client, exp_id, "deepavfusion", {"fusion_layers": layers}, 0.7, 0.03)
    _run(client, exp_id, "deepavfusion", {"fusion_block": "dense"}, 0.72, 0.05)
    return ablation_table(tracking.runs_frame(store, EXP), depth=4)


def _rows(table, study):
    return table[table["study"] == study].set_index("setting")


def test_the_default_run_stands_in_every_study_it_belongs_to(table):
    lf, b = _rows(table, "mbt_fusion_layer"), _rows(table, "mbt_bottlenecks")
    assert list(lf.index) == ["0", "2"] and list(b.index) == ["4", "8"]  # Lf=0 has B=4; B=8 has Lf=2
    assert lf.loc["2", "n_seeds"] == 3 == b.loc["4", "n_seeds"]
    assert lf.loc["0", "n_seeds"] == 1 and lf.loc["0", "top1"] == pytest.approx(60.0)  # the FAILED run is out
    assert _rows(table, "vanilla_fusion_layer").loc["4", "gflops"] == pytest.approx(0.016)


def test_the_interval_is_students_t_over_the_seeds(table):
    values = [70.0, 74.0, 81.0]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 3, scale=stats.sem(values))
    row = _rows(table, "mbt_fusion_layer").loc["2"]
    assert row["top1"] == pytest.approx(75.0) and row["ci95_low"] == pytest.approx(low)
    assert row["ci95_high"] == pytest.approx(high) and math.isnan(_rows(table, "mbt_bottlenecks").loc["8", "ci95_low"])


def test_deepavfusion_settings_keep_their_written_form_and_the_papers_order(table):
    assert list(_rows(table, "deepavfusion_fusion_layers").index) == ["none", "0-2", "all"]
    assert list(_rows(table, "deepavfusion_fusion_block").index) == ["dense", "factorized"]  # "all" is factorized
