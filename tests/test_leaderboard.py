"""leaderboard: aggregation and CI math on a hand-made store, the markdown table, robustness figures, plots."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from fusionbench import leaderboard, tracking
from fusionbench.config import Config
from sweep_runners import fresh_store

T_2 = 4.302652729911275  # t_{0.975, 2}
EXP = "lb"


def log_run(store: Path, fusion: str, seed: int, metrics: dict[str, float], preset: str = "small",
            fail: bool = False, experiment: str = EXP, data: dict | None = None, tags: dict | None = None) -> str:
    cfg = OmegaConf.merge(OmegaConf.structured(Config), {
        "fusion": fusion, "seed": seed, "preset": preset, "tracking": {"store": str(store), "experiment": experiment},
        "data": data or {}})
    try:
        with tracking.tracked_run(cfg) as tr:
            tr.log_metrics(metrics)
            if tags:
                tr.set_tags(tags)
            if fail:
                raise RuntimeError("crashed after logging")
    except RuntimeError:
        pass
    time.sleep(0.01)  # distinct start times: the latest FINISHED run of an identity wins
    return tr.run_id


def cost(gflops: float | None) -> dict[str, float]:
    out = {"model/params": 2.5e6, "time/train_s": 12.0}
    if gflops is not None:
        out.update({"model/gflops": gflops, "cost/train_clips_s": 100.0 / gflops, "cost/peak_mem_mb": 10.0 * gflops})
    return out


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("lb")
    store = fresh_store(tmp / "results")
    ids = {}
    for seed, (av, snr, noise) in enumerate([(0.70, 0.35, 0.50), (0.74, 0.37, 0.52), (0.78, 0.39, 0.54)]):
        ids[("late", seed)] = log_run(store, "late", seed, {
            "test/av/top1": av, "test/av/loss": 1 - av, "test/audio_snr_-5/top1": snr,
            "test/video_noise_0.5/top1": noise, **cost(1.0)})
    log_run(store, "early", 0, {"test/av/top1": 0.10, **cost(2.0)})  # superseded by the re-run below
    for seed, (av, snr, noise) in enumerate([(0.80, 0.60, 0.40), (0.84, 0.62, 0.44), (0.88, 0.64, 0.48)]):
        ids[("early", seed)] = log_run(store, "early", seed, {
            "test/av/top1": av, "test/av/loss": 1 - av, "test/audio_snr_-5/top1": snr,
            "test/video_noise_0.5/top1": noise, **cost(2.0)})
    ids[("mbt", 0)] = log_run(store, "mbt", 0, {"test/av/top1": 0.90, "test/audio_snr_-5/top1": 0.50, **cost(1.5)})
    ids[("late-tiny", 0)] = log_run(store, "late", 0, {"test/av/top1": 0.60, **cost(0.2)}, preset="tiny")
    failed = log_run(store, "late", 3, {"test/av/top1": 0.99, **cost(1.0)}, fail=True)
    paths = leaderboard.write_leaderboard(store, EXP, tmp / "out", notes=["leak probe: audio-only model at chance"])
    return {"store": store, "ids": ids, "failed": failed, "paths": paths, "tmp": tmp}


def test_runs_csv_one_row_per_run_and_condition(board: dict) -> None:
    runs = pd.read_csv(board["paths"]["runs"])
    assert list(runs.columns[: len(leaderboard.RUN_KEYS)]) == leaderboard.RUN_KEYS
    assert {"top1", "loss", "params", "gflops", "train_s"} <= set(runs.columns)
    assert len(runs) == 3 * 3 + 3 * 3 + 2 + 1  # late, early: 3 seeds × 3 conditions; mbt 2; late tiny 1
    assert set(runs["run_id"]) == set(board["ids"].values())  # FAILED and superseded runs left out
    assert set(runs["condition"]) == {"av", "audio_snr_-5", "video_noise_0.5"}  # '-' and '.' survive parsing
    assert (runs["status"] == "FINISHED").all()
    row = runs[(runs["run_id"] == board["ids"][("early", 0)]) & (runs["condition"] == "av")].iloc[0]
    assert row["top1"] == pytest.approx(0.80) and row["gflops"] == 2.0 and row["params"] == 2.5e6
    assert row["seed"] == 0 and row["preset"] == "small" and row["fusion"] == "early"


def test_leaderboard_mean_std_ci_match_hand_computation(board: dict) -> None:
    lb = pd.read_csv(board["paths"]["leaderboard"])
    assert list(lb.columns) == leaderboard.LEADERBOARD_COLUMNS
    late = lb[(lb.fusion == "late") & (lb.preset == "small") & (lb.condition == "av") & (lb.metric == "top1")]
    assert len(late) == 1
    r = late.iloc[0]
    half = T_2 * 0.04 / math.sqrt(3)
    assert r["mean"] == pytest.approx(0.74) and r["std"] == pytest.approx(0.04) and r["n_seeds"] == 3
    assert r["ci95_low"] == pytest.approx(0.74 - half) and r["ci95_high"] == pytest.approx(0.74 + half)
    assert r["params"] == 2.5e6 and r["gflops"] == 1.0
    assert r["train_clips_s"] == 100.0 and r["peak_mem_mb"] == 10.0  # the entry's cost beside its scores
    early = lb[(lb.fusion == "early") & (lb.condition == "av") & (lb.metric == "top1")].iloc[0]
    assert early["mean"] == pytest.approx(0.84) and early["n_seeds"] == 3  # the superseded 0.10 is not counted
    mbt = lb[(lb.fusion == "mbt") & (lb.condition == "av")].iloc[0]
    assert mbt["n_seeds"] == 1 and mbt["mean"] == pytest.approx(0.90)
    assert math.isnan(mbt["std"]) and math.isnan(mbt["ci95_low"]) and math.isnan(mbt["ci95_high"])
    presets = lb[(lb.fusion == "late") & (lb.condition == "av") & (lb.metric == "top1")]
    assert sorted(presets["preset"]) == ["small", "tiny"] and presets["config_hash"].nunique() == 2


def test_t_quantile_fallback_table_is_conservative(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    with_scipy = [leaderboard.t975(df) for df in (1, 2, 4, 11, 500)]
    monkeypatch.setattr(builtins, "__import__", no_scipy)
    without = [leaderboard.t975(df) for df in (1, 2, 4, 11, 500)]
    assert without[:3] == pytest.approx(with_scipy[:3], abs=1e-3)
    assert all(b >= a - 1e-3 for a, b in zip(with_scipy, without))


def test_markdown_table_shows_percent_seeds_and_bolds_no_tie(board: dict) -> None:
    md = board["paths"]["markdown"].read_text()
    assert "## synth-joint" in md and "top1 (%)" in md and "Every score is in percent" in md
    header = next(line for line in md.splitlines() if line.startswith("| fusion |"))
    assert header.split(" | ")[2:5] == ["av", "audio_snr_-5", "video_noise_0.5"]
    lines = md.splitlines()
    table = lines[lines.index(header) + 2 : lines.index("", lines.index(header))]
    rows = {line.split(" | ")[0].strip("| "): line for line in table}
    assert set(rows) >= {"early", "late (small)", "late (tiny)", "mbt"}
    half_snr = 100 * T_2 * 0.02 / math.sqrt(3)
    assert f"| 62.0 ± {half_snr:.1f} |" in rows["early"]
    # no column has a best whose CI clears the runner-up's: mbt's 90.0 on av is one seed, early's 62.0 on
    # audio_snr_-5 beats a one-seed mbt, late's 52.0 on video_noise_0.5 overlaps early's 44.0 ± 9.9
    assert "**" not in "\n".join(table)
    assert "| 90.0 |" in rows["mbt"]
    assert rows["late (small)"].split(" | ")[1] == "3" and rows["mbt"].split(" | ")[1] == "1"  # seeds column
    assert "2.50 M" in rows["early"]
    assert header.endswith("| params | GFLOPs | train clips/s | peak MiB |")
    assert rows["early"].endswith("| 2.50 M | 2 | 50 | 20 |")  # cost beside accuracy
    assert "7 finished runs" not in md and "8 finished runs" in md
    assert md.rstrip().endswith("- leak probe: audio-only model at chance")


@pytest.mark.parametrize("x_column", ["gflops", "train_clips_s"])
def test_pareto_front_on_any_cost_axis(board: dict, x_column: str) -> None:
    """The front is the same entries whether the axis is a cost (GFLOPs: less is cheaper) or a rate (clips/s: more
    is cheaper): late (tiny), late, mbt; early (2 GFLOPs, 84 %) is dominated by mbt (1.5, 90 %)."""
    from fusionbench.reports.markdown import entry_table
    from fusionbench.reports.plots import pareto_figure

    lb = pd.read_csv(board["paths"]["leaderboard"])
    fig = pareto_figure(lb, "synth-joint", "top1", entry_table(lb, "synth-joint", "top1"), x_column)
    front = next(line for line in fig.axes[0].lines if line.get_label() == "Pareto front")
    assert sorted(front.get_ydata().round(1)) == [60.0, 74.0, 90.0]
    with pytest.raises(ValueError, match="not one of"):
        pareto_figure(lb, "synth-joint", "top1", entry_table(lb, "synth-joint", "top1"), "top1")


def test_robustness_auc_and_effective_robustness(board: dict) -> None:
    rob = pd.read_csv(board["paths"]["robustness"])
    assert list(rob.columns) == leaderboard.ROBUSTNESS_COLUMNS
    early = rob[(rob.fusion == "early") & (rob.kind == "audio_snr")].iloc[0]
    assert early["auc"] == pytest.approx((0.84 + 0.62) / 2)
    assert early["relative_auc"] == pytest.approx((0.84 + 0.62) / 2 / 0.84)
    # late keeps 0.37 / 0.74 = 50% at -5 dB, so it predicts 0.42 for early's clean 0.84; early reaches 0.62
    assert early["effective_robustness"] == pytest.approx(0.62 - 0.84 * 0.37 / 0.74)
    noise = rob[(rob.fusion == "early") & (rob.kind == "video_noise")].iloc[0]
    assert noise["effective_robustness"] == pytest.approx(0.44 - 0.84 * 0.52 / 0.74)
    late = rob[(rob.fusion == "late") & (rob.preset == "small")]
    assert late["effective_robustness"].abs().max() == pytest.approx(0.0)
    assert set(rob["kind"]) == {"audio_snr", "video_noise"}


def test_plots_written_and_skipped_with_a_note(board: dict, tmp_path: Path) -> None:
    for kind in ("pareto", "robustness"):
        png = board["paths"][f"{kind}_synth-joint"]
        assert png.read_bytes()[:4] == b"\x89PNG"
    store = board["store"]
    log_run(store, "late", 0, {"test/av/top1": 0.5, **cost(None)}, experiment="nogflops")
    out = tmp_path / "out2"
    out.mkdir()
    (out / "pareto_synth-gone.png").write_bytes(b"a dataset of an older results folder")  # no manifest lists it
    first = leaderboard.write_leaderboard(store, EXP, out)  # the drawable set: its plots are there
    assert first["pareto_synth-joint"].exists() and not (out / "pareto_synth-gone.png").exists()
    paths = leaderboard.write_leaderboard(store, "nogflops", out)
    md = paths["markdown"].read_text()
    assert "no Pareto plot" in md and "no robustness plot" in md
    assert not any(k.startswith(("pareto", "robustness_")) for k in paths)
    assert not list(out.glob("*.png"))  # the plots the new set could not draw are gone, not left stale
    assert set(leaderboard.read_set(out)["files"]) == {p.name for p in out.iterdir() if not p.name.startswith(".")}


def test_empty_store_writes_empty_tables(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    paths = leaderboard.write_leaderboard(store, "nothing", tmp_path / "out")
    assert pd.read_csv(paths["leaderboard"]).empty
    assert list(pd.read_csv(paths["leaderboard"]).columns) == leaderboard.LEADERBOARD_COLUMNS
    assert "No finished runs" in paths["markdown"].read_text()


def probe(audio: float, video: float, ceiling: float, tolerance: float = 0.05) -> dict[str, float]:
    """What fusionbench.data.prepare.log_leak_probe logs for a run's synthetic set."""
    leak = sum(x > ceiling + tolerance for x in (audio, video))
    return {"data/leak_probe/audio": audio, "data/leak_probe/video": video, "data/leak_probe/ceiling": ceiling,
            "data/leak_probe/tolerance": tolerance, "data/leak_probe/chance": ceiling, "data/leak_probe/leak": leak}


def test_markdown_shows_the_leak_probe_and_flags_a_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fusionbench.data import synthetic

    monkeypatch.setitem(synthetic.STRETCH_TASKS, "sync", "leak-free, yet learnt by no fusion")  # a stretch task
    store = fresh_store(tmp_path / "results")
    exp = "probe"
    ok = {"fb.leak_probe.set": "joint", "fb.leak_probe": "ok"}
    for seed in (0, 1):  # joint: each modality alone at its 25 % ceiling
        log_run(store, "late", seed, {"test/av/top1": 0.8, **cost(1.0), **probe(0.248, 0.262, 0.25)},
                experiment=exp, tags=ok)
    # sync: audio alone far above chance (the documented first/last-frame leak); video at chance
    log_run(store, "late", 0, {"test/av/top1": 0.9, **cost(1.0), **probe(0.71, 0.50, 0.50)}, experiment=exp,
            data={"task": "sync"}, tags={"fb.leak_probe.set": "sync-0badc0de", "fb.leak_probe": "leak"})
    # modsum: a run that could not probe (no scikit-learn)
    log_run(store, "late", 0, {"test/av/top1": 0.3, **cost(1.0)}, experiment=exp, data={"task": "modsum"},
            tags={"fb.leak_probe": "unavailable", "fb.leak_probe.error": "No module named 'sklearn'"})
    # a real (non-synthetic) dataset has no stated ceiling: no probe line
    log_run(store, "late", 0, {"test/av/top1": 0.5, **cost(1.0)}, experiment=exp,
            data={"dataset": "vggsound", "root": str(tmp_path / "vggsound")})  # named vggsound-<root folder>
    paths = leaderboard.write_leaderboard(store, exp, tmp_path / "out")
    md = paths["markdown"].read_text()
    sections = {part.split("\n", 1)[0]: part for part in md.split("\n## ")[1:]}
    assert set(sections) == {"synth-joint", "synth-sync", "synth-modsum", "vggsound-vggsound", "Notes"}

    joint = sections["synth-joint"]
    assert "| joint | 2 | 24.8 % | 26.2 % | 25.0 % (+5.0) | ok |" in joint.splitlines()
    assert "LEAK" not in joint
    assert joint.index("Leak probe") < joint.index("| fusion |")  # above the results table

    sync = sections["synth-sync"]
    assert "| sync-0badc0de | 1 | **71.0 %** | 50.0 % | 50.0 % (+5.0) | ⚠ LEAK: audio |" in sync.splitlines()
    warning = next(line for line in sync.splitlines() if line.startswith("> ⚠ **LEAK**"))
    assert "audio alone reaches 71.0 %" in warning and "ceiling 50.0 %" in warning
    assert sync.index(warning) < sync.index("| fusion |")
    assert "⚠ LEAK in synth-sync: audio alone reaches 71.0 %" in sections["Notes"]

    modsum = sections["synth-modsum"]
    assert "Leak probe: not recorded by these runs (unavailable: No module named 'sklearn')" in modsum
    assert "Leak probe" not in sections["vggsound-vggsound"]

    # each synthetic task states its known answer above its table; the stretch task is flagged, the others are not
    for name, section in sections.items():
        known = [line for line in section.splitlines() if line.startswith("Known answer: ")]
        assert len(known) == (name.startswith("synth-")), name
        assert ("Stretch task, not learnt" in section) == (name == "synth-sync"), name
    assert sync.index("Stretch task") < sync.index("| fusion |")
    assert "score-level late fusion stays at chance" in modsum

    runs = pd.read_csv(paths["runs"], keep_default_na=False)
    tail = leaderboard.PROBE_COLUMNS + list(leaderboard.REFERENCE_METRICS)  # columns added later come last
    assert list(runs.columns[-len(tail):]) == tail
    assert list(runs.columns[: len(leaderboard.RUN_KEYS)]) == leaderboard.RUN_KEYS
    flags = runs.groupby("dataset")["leak_probe_leak"].agg(set)
    assert flags.to_dict() == {"synth-joint": {"none"}, "synth-sync": {"audio"}, "synth-modsum": {""},
                               "vggsound-vggsound": {""}}
    board_csv = pd.read_csv(paths["leaderboard"])
    assert list(board_csv.columns) == leaderboard.LEADERBOARD_COLUMNS
    sync_row = board_csv[board_csv["dataset"] == "synth-sync"].iloc[0]
    assert sync_row["leak_probe_audio"] == pytest.approx(0.71) and sync_row["leak_probe_leak"] == "audio"
    joint_row = board_csv[board_csv["dataset"] == "synth-joint"].iloc[0]
    assert joint_row["leak_probe_video"] == pytest.approx(0.262) and joint_row["leak_probe_leak"] == "none"
    assert board_csv.loc[board_csv["dataset"] == "synth-modsum", "leak_probe_leak"].isna().all()
