"""Data preparation: each synthetic set generated and leak-probed once (cached JSON), in the sweep parent and in a run.

Real sets (small modsum sets written as mp4s), a real probe, a real sqlite store; nothing mocked.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from fusionbench import leaderboard, sweep, tracking
from fusionbench.config import load_config
from fusionbench.data import synthetic as S
from fusionbench.data.datamodule import AVDataModule
from fusionbench.data.prepare import PROBE_FILE, cached_leak_probe, log_leak_probe, prepare_cells, probe_key
from fusionbench.evaluate.conditions import parse_condition
from sweep_runners import fresh_store

pytest.importorskip("sklearn")

LINE = re.compile(r"^\[data\] synth-modsum: (\d+) clips in (\S+) \((generated in [\d.]+ s|ready)\) \| leak probe "
                  r"\((cached|[\d.]+ s)\): audio (0\.\d{3}), video (0\.\d{3}) vs ceiling 0\.250 .* — (ok|⚠ LEAK.*)$")


def _cfgs(root: Path, *grid: str) -> list:
    base = ["data.task=modsum", f"data.root={root}", "data.synth.num_clips=80", "data.cache_dir=''"]
    return [load_config([*base, *cell]) for cell in sweep.expand_grid(list(grid))]


def _parse(lines: list[str]) -> list[re.Match]:
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return matches


def test_prepare_generates_and_probes_each_set_once_and_reuses_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    # 2 fusions × 2 batch sizes: one data set (batch size and fusion do not change the clips)
    cfgs = _cfgs(root, "fusion=late,early", "data.batch_size=8,16")
    lines: list[str] = []
    (first,) = prepare_cells(cfgs, lines.append, workers=2)
    (match,) = _parse(lines)
    assert match[1] == "80" and match[3].startswith("generated") and match[4] != "cached"
    probe_path = first.set_dir / PROBE_FILE
    assert first.generated and not first.probe.cached and probe_path.is_file()
    saved = json.loads(probe_path.read_text())
    assert saved["key"] == probe_key(first.set_dir) and saved["result"] == first.probe.result
    r = first.probe.result
    assert r["task"] == "modsum" and r["ceiling"] == r["chance"] == 0.25 and r["n_train"] + r["n_test"] == 80
    assert r["leak"] == [] and {float(match[5]), float(match[6])} == {round(r["audio"], 3), round(r["video"], 3)}
    mtime = probe_path.stat().st_mtime_ns
    # no noise override: the set is rendered at the task's own noise, not a global default
    spec = S.TASKS["modsum"]
    render = json.loads((first.set_dir / "generator.json").read_text())["render"]
    assert (render["video_noise"], render["audio_snr_db"]) == (spec.video_noise, spec.audio_snr_db)

    # again: nothing generated, nothing refitted (the JSON is read, not rewritten)
    lines.clear()
    (again,) = prepare_cells(cfgs, lines.append, workers=2)
    (match,) = _parse(lines)
    assert match[3] == "ready" and match[4] == "cached" and not again.generated and again.probe.cached
    assert again.probe.result == first.probe.result and probe_path.stat().st_mtime_ns == mtime

    # the set rewritten by another PyAV (a generator.json field the datamodule ignores): kept, but probed again
    info_path = first.set_dir / "generator.json"
    original = info_path.read_text()
    info = json.loads(original)
    info_path.write_text(json.dumps({**info, "av": "0.0.1"}, indent=2, sort_keys=True) + "\n")
    (rewritten,) = prepare_cells(cfgs, lambda line: None, workers=2)
    assert not rewritten.generated and not rewritten.probe.cached and probe_path.stat().st_mtime_ns != mtime
    assert json.loads(probe_path.read_text())["key"] == probe_key(first.set_dir)
    mtime = probe_path.stat().st_mtime_ns

    # a set from another generator spec: regenerated in place, and its probe recomputed
    info_path.write_text(json.dumps({**info, "spec": {**info["spec"], "event_margin": 1}}, indent=2) + "\n")
    lines.clear()
    (regenerated,) = prepare_cells(cfgs, lines.append, workers=2)
    (match,) = _parse(lines)
    assert match[3].startswith("generated") and match[4] != "cached"
    assert regenerated.generated and not regenerated.probe.cached and probe_path.stat().st_mtime_ns != mtime
    assert info_path.read_text() == original and regenerated.probe.result == first.probe.result  # deterministic

    # other generator parameters: a set of their own, with its own probe; the first is left alone
    mtime = probe_path.stat().st_mtime_ns
    lines.clear()
    sets = prepare_cells([*cfgs, *_cfgs(root, "data.synth.video_noise=0.3")], lines.append, workers=2)
    assert [s.generated for s in sets] == [False, True] and sets[1].set_dir != sets[0].set_dir
    assert sets[1].set_dir.name.startswith("modsum-") and (sets[1].set_dir / PROBE_FILE).is_file()
    assert len(_parse(lines)) == 2 and probe_path.stat().st_mtime_ns == mtime
    assert cached_leak_probe(sets[1].set_dir).cached
    render = json.loads((sets[1].set_dir / "generator.json").read_text())["render"]
    assert (render["video_noise"], render["audio_snr_db"]) == (0.3, spec.audio_snr_db)  # only what was overridden


def test_sweep_prepares_before_its_workers_and_runs_log_the_cached_probe(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "results")
    root = tmp_path / "synth"
    grid = ["seed=0:2", "data.task=modsum", f"data.root={root}", "data.synth.num_clips=60",
            f"data.cache_dir={tmp_path / 'cache'}", "eval.conditions=[av,audio_snr_0,video_noise_0.5]",
            f"tracking.store={store}", "tracking.experiment=prep"]
    lines: list[str] = []
    report = sweep.run_sweep(grid, workers=1, runner="sweep_runners:run", log=lines.append)
    assert report.ok and len(report.finished) == 2
    data_lines = [i for i, line in enumerate(lines) if line.startswith("[data]")]
    assert len(data_lines) == 1 and data_lines[0] < min(i for i, line in enumerate(lines) if "] start " in line)
    (match,) = _parse([lines[data_lines[0]]])
    set_dir = Path(match[2]) if Path(match[2]).is_absolute() else None
    cfg = load_config([*grid[1:], "seed=0", "fusion=mbt"])
    dm = AVDataModule(cfg.data)
    assert set_dir == dm.synth_dir and (set_dir / PROBE_FILE).is_file()
    mtime = (set_dir / PROBE_FILE).stat().st_mtime_ns
    # the sweep also warmed the tensor cache: a run's datamodule decodes and corrupts nothing itself
    conditions = [parse_condition(name) for name in cfg.eval.conditions]
    warmed = AVDataModule(cfg.data, conditions=conditions)
    warmed.setup()
    for condition in conditions:
        if condition.corrupts:
            warmed.corrupted("test", condition)
    assert warmed.decode_count == 0 and warmed.corrupt_count == 0 and warmed.cache.hits == 3 + 2

    # what fusionbench.train.run does after building its datamodule: log the (cached) probe with the run
    printed: list[str] = []
    with tracking.tracked_run(cfg) as tr:
        record = log_leak_probe(tr, dm, log=printed.append)
        tr.log_metrics({"test/av/top1": 0.5})
    assert record.cached and (set_dir / PROBE_FILE).stat().st_mtime_ns == mtime
    assert printed and printed[0].startswith("leak probe (cached): audio ")
    run = tracking.runs_frame(store, "prep").set_index("run_id").loc[tr.run_id]
    assert run["metrics.data/leak_probe/audio"] == pytest.approx(record.result["audio"])
    assert run["metrics.data/leak_probe/ceiling"] == 0.25 and run["metrics.data/leak_probe/leak"] == 0
    assert run["tags.fb.leak_probe"] == "ok" and run["tags.fb.leak_probe.leak"] == "none"
    assert run["tags.fb.leak_probe.set"] == set_dir.name

    paths = leaderboard.write_leaderboard(store, "prep", tmp_path / "out")
    md = paths["markdown"].read_text()
    row = next(line for line in md.splitlines() if line.startswith(f"| {set_dir.name} |"))
    assert row.endswith("| 25.0 % (+{:.1f}) | ok |".format(100 * record.result["tolerance"]))
    assert "{:.1f} %".format(100 * record.result["video"]) in row
    runs = pd.read_csv(paths["runs"])
    mbt = runs[runs["fusion"] == "mbt"].iloc[0]
    assert mbt["leak_probe_set"] == set_dir.name and mbt["leak_probe_leak"] == "none"


def _prepare_and_count(cfg, barrier, out) -> None:
    """In a child process: prepare the set and report how many times this process wrote it."""
    writes = []
    generate = S.generate

    def counted(**kwargs):
        writes.append(kwargs["out"])
        return generate(**kwargs)

    S.generate = counted  # the real generator, counted
    barrier.wait()  # both ask at the same moment
    AVDataModule(cfg.data, decode_workers=1).prepare_data()
    out.put(len(writes))


def test_concurrent_datamodules_generate_a_missing_set_once(tmp_path: Path) -> None:
    """Two processes asking for the same missing set: one writes it under the set's lock, the other waits and finds
    it ready, instead of both writing the same files."""
    import multiprocessing

    (cfg,) = _cfgs(tmp_path / "synth", "data.synth.num_clips=16")
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_and_count, args=(cfg, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    writes = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert writes == [0, 1]
    assert len(pd.read_csv(AVDataModule(cfg.data).manifest_path)) == 16
