"""The entry: MLflow store → runs.csv, leaderboard.csv, robustness.csv, leaderboard.md and plots, as one set.

Every file is rendered in memory, then written with :func:`fusionbench.reports.atomic.write_set`: a kill at any
moment leaves the previous complete set or (after ``atomic.recover``, which every writer and reader runs first) the
new one, never a mix or an empty file; plots the new set does not draw (a dataset gone, a plot no longer drawable)
are removed.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from fusionbench import tracking
from fusionbench.config import project_path
from fusionbench.reports.atomic import MANIFEST, write_set
from fusionbench.reports.fmt import _safe
from fusionbench.reports.markdown import (CELL_RULES, dataset_markdown, diverged_markdown, entry_table,
                                          known_answer_lines, robust_lines)
from fusionbench.reports.plots import pareto_plot, robustness_plot
from fusionbench.reports.probe import probe_markdown, probe_table
from fusionbench.reports.robustness import robustness_table
from fusionbench.reports.runs import counted_runs, diverged_runs, runs_table
from fusionbench.reports.tables import headline_metric, leaderboard_table

TABLES = {"runs": "runs.csv", "leaderboard": "leaderboard.csv", "robustness": "robustness.csv",
          "markdown": "leaderboard.md"}
PLOTS = {"pareto": pareto_plot, "robustness": robustness_plot}  # file: <kind>_<dataset>.png
OWNED = [f"{kind}_*.png" for kind in PLOTS]  # files of this set even where an older set wrote no manifest


def write_leaderboard(store: str | Path, experiment: str, out_dir: str | Path = "results",
                      notes: list[str] | None = None, pareto_x: str = "gflops") -> dict[str, Path]:
    """Write runs.csv, leaderboard.csv, robustness.csv, leaderboard.md and plots as one set; return {name: path}.
    ``pareto_x``: the Pareto plot's cost axis (``columns.PARETO_X``).

    Ranked: FINISHED runs that did not diverge (the latest per identity); diverged runs are listed apart."""
    out = project_path(out_dir)
    frame = tracking.runs_frame(store, experiment)
    runs, diverged = counted_runs(frame), diverged_runs(frame)
    table = runs_table(runs)
    board = leaderboard_table(table)
    datasets = sorted(board["dataset"].unique())
    metrics = {d: m for d in datasets if (m := headline_metric(runs, board, d)) is not None}
    robust = robustness_table(board, metrics)
    probes = probe_table(runs)

    files: dict[str, bytes] = {
        TABLES["runs"]: table.to_csv(index=False).encode(),
        TABLES["leaderboard"]: board.to_csv(index=False).encode(),
        TABLES["robustness"]: robust.to_csv(index=False).encode(),
    }
    paths = {key: out / name for key, name in TABLES.items()}
    skipped_notes, sections, leak_notes = [], [], []
    for dataset, metric in metrics.items():
        entries = entry_table(board, dataset, metric)
        probe_lines, notes_here = probe_markdown(probes, dataset)
        leak_notes += notes_here
        sections += dataset_markdown(board, dataset, metric, entries, [*known_answer_lines(dataset), *probe_lines],
                                     table)
        for kind, plot in PLOTS.items():
            drawn = plot(board, dataset, metric, entries, pareto_x) if kind == "pareto" else \
                plot(board, dataset, metric, entries)
            if isinstance(drawn, str):
                skipped_notes.append(drawn)
                continue
            name = f"{kind}_{_safe(dataset)}.png"
            files[name] = drawn
            paths[f"{kind}_{dataset}"] = out / name
            sections.append(f"![{kind} {dataset}]({name})")
        rob = robust[robust["dataset"] == dataset]
        if len(rob):
            sections += ["", "Robustness (area under the curve over severity ranks; effective robustness vs late "
                         "fusion's retention — formulas in `fusionbench/reports/robustness.py`):", "",
                         *robust_lines(rob, entries)]
        sections.append("")

    seeds = sorted(table["seed"].unique()) if len(table) else []
    no_test = len(runs) - table["run_id"].nunique() if len(runs) else 0
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    apart = f"; {len(diverged)} diverged run(s) listed apart, not ranked" if len(diverged) else ""
    head = [
        "# fusionbench leaderboard", "",
        f"_Generated {when} from experiment `{experiment}`: {table['run_id'].nunique()} finished runs, "
        f"{board['fusion'].nunique()} fusion(s), {len(datasets)} dataset(s), "
        f"seeds {', '.join(map(str, seeds)) or '–'}{apart}._",
        "", CELL_RULES, "",
    ]
    if not datasets:
        head += ["No finished runs with test metrics yet.", ""]
    tail = []
    all_notes = [f"{no_test} finished runs logged no `test/...` metrics and are not in the tables."] if no_test else []
    all_notes = leak_notes + all_notes + skipped_notes + list(notes or [])
    if all_notes:
        tail = ["## Notes", "", *(f"- {n}" for n in all_notes), ""]
    files[TABLES["markdown"]] = "\n".join(head + sections + diverged_markdown(diverged) + tail).encode()
    write_set(out, files, owned=OWNED)
    paths["manifest"] = out / MANIFEST
    return paths
