"""Honest reports on a real sqlite MLflow store: diverged runs are listed apart and never ranked; CIs are clipped to
[0, 100 %]; chance and the majority-class rate are shown; bold only without a tie; degenerate columns are called
out; a model at the majority class is not called robust; plots share colours, units and y-ranges."""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from fusionbench import leaderboard, tracking
from fusionbench.config import Config
from fusionbench.reports import atomic
from sweep_runners import fresh_store

EXP = "honest"
T_2 = 4.302652729911275
REFS = {"data/chance": 0.25, "data/majority_test": 0.273, "data/num_classes": 4.0}
# fusion → per seed (av, audio_snr_0, video_noise_0.5); every run scores the majority rate 27.3 % on
# video_occlusion_0.5
SCORES = {
    "early": [(0.96, 0.80, 0.60), (0.98, 0.82, 0.62), (1.00, 0.84, 0.64)],  # av 98 ± 5 %: 103 % unclipped
    "mid": [(0.70, 0.50, 0.58), (0.72, 0.52, 0.60), (0.74, 0.54, 0.62)],  # video_noise: below early, CIs overlap
    "late": [(0.270, 0.273, 0.273), (0.273, 0.273, 0.273), (0.276, 0.273, 0.273)],  # at the majority class
}


def cfg_for(store: Path, fusion: str, seed: int):
    return OmegaConf.merge(OmegaConf.structured(Config), {
        "fusion": fusion, "seed": seed, "preset": "small", "tracking": {"store": str(store), "experiment": EXP}})


def log_finished(store: Path, fusion: str, seed: int, metrics: dict[str, float]) -> str:
    with tracking.tracked_run(cfg_for(store, fusion, seed)) as tr:
        tr.log_metrics({**metrics, **REFS, "model/params": 5e5, "model/gflops": {"early": 0.02}.get(fusion, 0.03)})
    time.sleep(0.01)
    return tr.run_id


def log_diverged(store: Path, fusion: str, seed: int, status: str) -> str:
    """A run as tracking records a divergence, created by hand with MlflowClient: fb tags, fb.status=diverged,
    fb.error, a (meaningless) test metric, ended ``status``."""
    ident = tracking.identity_of(cfg_for(store, fusion, seed))
    client = tracking.client(store)
    exp_id = tracking.ensure_experiment(store, EXP)
    tags = {"fb.fusion": fusion, "fb.dataset": ident.dataset, "fb.config_hash": ident.config_hash,
            "fb.seed": str(seed), "fb.identity": ident.key, "fb.preset": "small", "fb.status": "diverged",
            "fb.error": f"diverged: train loss became nan at step {12 + seed}"}
    run = client.create_run(exp_id, run_name=f"{fusion}-diverged-{seed}", tags=tags)
    client.log_metric(run.info.run_id, "test/av/top1", 0.25)
    client.log_metric(run.info.run_id, "data/chance", 0.25)
    client.set_terminated(run.info.run_id, status)
    time.sleep(0.01)
    return run.info.run_id


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("honest")
    store = fresh_store(tmp / "results")
    for fusion, seeds in SCORES.items():
        for seed, (av, snr, noise) in enumerate(seeds):
            log_finished(store, fusion, seed, {"test/av/top1": av, "test/audio_snr_0/top1": snr,
                                               "test/video_noise_0.5/top1": noise,
                                               "test/video_occlusion_0.5/top1": 0.273})
    diverged = [log_diverged(store, "mbt", 0, "FAILED"),  # what tracking writes
                log_diverged(store, "mbt", 1, "FINISHED")]  # a FINISHED run tagged diverged is not ranked either
    paths = leaderboard.write_leaderboard(store, EXP, tmp / "out")
    md = paths["markdown"].read_text()
    sections = {part.split("\n", 1)[0]: part for part in md.split("\n## ")[1:]}
    return {"store": store, "paths": paths, "md": md, "sections": sections, "diverged": diverged, "tmp": tmp}


def table_rows(section: str) -> dict[str, str]:
    lines = section.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| fusion |"))
    table = lines[header + 2 : lines.index("", header)]
    return {line.split(" | ")[0].strip("| "): line for line in table}


def test_diverged_runs_are_listed_apart_and_never_ranked(out: dict) -> None:
    runs = pd.read_csv(out["paths"]["runs"])
    board = pd.read_csv(out["paths"]["leaderboard"])
    assert "mbt" not in set(runs["fusion"]) and "mbt" not in set(board["fusion"])
    assert not set(out["diverged"]) & set(runs["run_id"])
    assert (runs["status"] == "FINISHED").all()
    diverged = out["sections"]["Diverged runs"]
    assert "| fusion | dataset | preset | seed | config | reason (`fb.error`) | run |" in diverged
    for seed, run_id in enumerate(out["diverged"]):
        row = next(line for line in diverged.splitlines() if run_id in line)
        assert row.startswith(f"| mbt | synth-joint | small | {seed} |")
        assert f"diverged: train loss became nan at step {12 + seed}" in row
    assert "mbt" not in table_rows(out["sections"]["synth-joint"])
    assert "2 diverged run(s) listed apart, not ranked" in out["md"]


def test_a_later_finished_run_supersedes_a_divergence(out: dict, tmp_path: Path) -> None:
    frame = tracking.runs_frame(out["store"], EXP)
    assert len(leaderboard.diverged_runs(frame)) == 2
    log_finished(out["store"], "mbt", 0, {"test/av/top1": 0.5})
    try:
        frame = tracking.runs_frame(out["store"], EXP)
        assert list(leaderboard.diverged_runs(frame)["seed"]) == [1]
        assert "mbt" in set(leaderboard.counted_runs(frame)["tags.fb.fusion"])
    finally:  # leave the module's store as the other tests expect
        client = tracking.client(out["store"])
        last = frame.sort_values("start_time").iloc[-1]
        client.delete_run(last["run_id"])


def test_ci_is_clipped_to_the_metric_range(out: dict) -> None:
    board = pd.read_csv(out["paths"]["leaderboard"])
    early = board[(board.fusion == "early") & (board.condition == "av") & (board.metric == "top1")].iloc[0]
    half = T_2 * 0.02 / math.sqrt(3)
    assert early["mean"] == pytest.approx(0.98) and 0.98 + half > 1.0
    assert early["ci95_high"] == 1.0 and early["ci95_low"] == pytest.approx(0.98 - half)
    assert (board.loc[board.metric == "top1", ["ci95_low", "ci95_high"]].stack().between(0, 1)).all()
    row = table_rows(out["sections"]["synth-joint"])["early"]
    assert f"98.0 [{100 * (0.98 - half):.1f}, 100.0]" in row
    assert not re.search(r"\b1(0[1-9]|[1-9]\d)\.\d", out["md"]) and "± 5.0 |" not in row.split(" | ")[2]


def test_chance_and_majority_are_shown(out: dict) -> None:
    runs = pd.read_csv(out["paths"]["runs"])
    board = pd.read_csv(out["paths"]["leaderboard"])
    assert list(runs.columns[-3:]) == ["chance", "majority", "num_classes"]
    assert (runs["chance"] == 0.25).all() and (runs["majority"] == 0.273).all() and (runs["num_classes"] == 4).all()
    assert list(board.columns) == leaderboard.LEADERBOARD_COLUMNS and (board["majority"] == 0.273).all()
    rows = table_rows(out["sections"]["synth-joint"])
    assert rows["_chance (1/C)_"] == "| _chance (1/C)_ | | 25.0 | 25.0 | 25.0 | 25.0 | | |"
    assert rows["_majority class_"] == "| _majority class_ | | 27.3 | 27.3 | 27.3 | 27.3 | | |"


def test_bold_only_where_the_best_interval_clears_the_runner_up(out: dict) -> None:
    rows = table_rows(out["sections"]["synth-joint"])
    header = next(line for line in out["sections"]["synth-joint"].splitlines() if line.startswith("| fusion |"))
    assert header.split(" | ")[2:6] == ["av", "audio_snr_0", "video_noise_0.5", "video_occlusion_0.5"]
    cells = {name: row.split(" | ")[2:6] for name, row in rows.items() if not name.startswith("_")}
    assert cells["early"][0].startswith("**98.0") and cells["early"][1].startswith("**82.0")  # clears mid's CI
    assert not any("**" in c for name in ("mid", "late") for c in cells[name])
    assert cells["early"][2] == "62.0 ± 5.0"  # best mean, but its CI overlaps mid's 60.0 ± 5.0: no bold
    assert not any("**" in row[3] for row in cells.values())  # video_occlusion_0.5: all tied, no bold
    assert "its interval lies entirely above the runner-up's" in out["md"]


def test_a_degenerate_column_is_called_out(out: dict) -> None:
    section = out["sections"]["synth-joint"]
    note = next(line for line in section.splitlines() if line.startswith("> ⚠ Degenerate"))
    assert "`video_occlusion_0.5`: every one of the 9 runs scores 27.3 %" in note
    assert "most frequent class" in note and "ignore the corrupted video" in note
    assert "audio_snr_0" not in note and section.index(note) > section.index("| fusion |")


def test_a_model_at_the_majority_class_is_not_called_robust(out: dict) -> None:
    rob = pd.read_csv(out["paths"]["robustness"])
    assert list(rob.columns) == leaderboard.ROBUSTNESS_COLUMNS
    late = rob[rob.fusion == "late"]
    assert late["clean"].iloc[0] == pytest.approx(0.273) and late["relative_auc"].isna().all()
    assert late["effective_robustness"].isna().all()
    early = rob[(rob.fusion == "early") & (rob.kind == "audio_snr")].iloc[0]
    assert early["relative_auc"] == pytest.approx((0.98 + 0.82) / 2 / 0.98)
    assert math.isnan(early["effective_robustness"])  # the baseline (late) learnt nothing: no retention ratio
    lines = out["sections"]["synth-joint"].splitlines()
    late_rows = [line for line in lines if line.startswith("| late | audio_snr")]
    assert late_rows and all(line.split(" | ")[5:7] == ["n/a", "n/a"] for line in late_rows)
    assert "no robustness is claimed" in out["sections"]["synth-joint"]


def test_exactly_at_the_majority_rate_in_float32_is_not_learnt() -> None:
    import numpy as np

    from fusionbench.reports.robustness import learnt

    at = float(np.float32(0.54))  # 0.5400000214: a float32 top-1 of 54 % vs the float64 majority rate 0.54
    row = pd.DataFrame([{"mean": at, "ci95_low": at, "ci95_high": at, "n_seeds": 3, "chance": 0.5, "majority": 0.54}])
    assert not learnt(row)
    assert learnt(row.assign(mean=0.56, ci95_low=0.55, ci95_high=0.57))
    assert not learnt(row.assign(n_seeds=1, ci95_low=math.nan)) and learnt(row.assign(chance=math.nan,
                                                                                      majority=math.nan))


def test_the_set_is_consistent_and_percent_is_stated(out: dict) -> None:
    manifest = atomic.read_set(out["paths"]["runs"].parent)
    assert set(manifest["files"]) == {"runs.csv", "leaderboard.csv", "robustness.csv", "leaderboard.md",
                                      "pareto_synth-joint.png", "robustness_synth-joint.png"}
    assert "Every score is in percent (runs.csv and leaderboard.csv keep fractions in [0, 1])" in out["md"]


def test_one_colour_per_fusion_from_the_registry() -> None:
    from fusionbench.registry import list_fusions
    from fusionbench.reports import plots

    assert list(plots.FUSION_COLOURS) == list_fusions()
    assert len(set(plots.FUSION_COLOURS.values())) == len(list_fusions())


def test_figures_share_colours_units_and_y_range(out: dict) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    from fusionbench.reports import plots

    board = pd.read_csv(out["paths"]["leaderboard"])
    entries = leaderboard.entry_table(board, "synth-joint", "top1")
    pareto = plots.pareto_figure(board, "synth-joint", "top1", entries)
    robust = plots.robustness_figure(board, "synth-joint", "top1", entries)
    try:
        panels = robust.axes
        assert len(panels) == 3 and len({ax.get_ylim() for ax in panels + pareto.axes}) == 1  # one y-range
        assert panels[0].get_ylim()[0] < 0 and panels[0].get_ylim()[1] > 100  # percent, 0–100 visible
        assert "(%)" in panels[0].get_ylabel() and "(%)" in pareto.axes[0].get_ylabel()
        assert not pareto.axes[0].texts  # no point labels that could overlap: a legend names the entries

        def colours(ax) -> dict[str, tuple]:  # legend label → colour (an errorbar's data line, or a line)
            handles, labels = ax.get_legend_handles_labels()
            return {label: to_rgb((h.lines[0] if hasattr(h, "lines") else h).get_color())
                    for h, label in zip(handles, labels)}

        for ax in [*panels, *pareto.axes]:
            seen = colours(ax)
            for fusion in ("early", "mid", "late"):
                assert seen[fusion] == to_rgb(plots.FUSION_COLOURS[fusion]), (fusion, ax.get_title())
            assert "chance (25.0 %)" in seen and "majority class (27.3 %)" in seen
    finally:
        plt.close("all")
