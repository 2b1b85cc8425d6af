"""The papers' ablations re-measured at small scale (issue 15): MBT's fusion layer Lf for bottleneck and vanilla
cross-attention fusion and its number of bottlenecks B; DeepAVFusion's fusion layers (none / every other / all) and
fusion block (token / dense / factorized). The grid is experiments/ablations.yaml (joint, 3 seeds, the benchmark's
settings), run by ``fusionbench sweep`` into the store's experiment ``fusionbench-ablations`` (finished cells are
skipped, so a stopped run resumes); the table is ``fusionbench.reports.ablations``.

Writes results/ablations.csv (one row per study and setting: top-1 mean and 95 % CI in percent, forward GFLOPs) and
results/ablations.png, and prints the table with each paper claim beside the numbers that test it.

    .venv/bin/python benchmarks/ablations.py [--workers 2] [--store results/mlflow.db] [--no-run]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from fusionbench import tracking
from fusionbench.registry import PRESETS
from fusionbench.reports.ablations import STUDIES, ablation_table, plot_ablations

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "experiments" / "ablations.yaml"
EXPERIMENT = "fusionbench-ablations"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", default="results/mlflow.db")
    parser.add_argument("--out", default="results", help="folder for ablations.csv and ablations.png")
    parser.add_argument("--no-run", action="store_true", help="only tabulate what the store holds")
    args = parser.parse_args(argv)
    if not args.no_run:
        cmd = [str(ROOT / ".venv" / "bin" / "fusionbench"), "sweep", "--experiment", str(GRID),
               "--workers", str(args.workers), f"tracking.store={args.store}"]
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            print("ablations: some cells failed (above); the table holds the finished ones", file=sys.stderr)
    table = ablation_table(tracking.runs_frame(args.store, EXPERIMENT), depth=PRESETS["small"].depth)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ablations.csv", index=False, float_format="%.4f")
    plot_ablations(table, out / "ablations.png")
    for study in STUDIES:
        sel = table[table["study"] == study.name]
        print(f"\n{study.name} — claim: {study.claim}")
        print(sel.drop(columns=["study", "fusion"]).to_string(  # GFLOPs at 4 decimals: settings differ in the third
            index=False, float_format=lambda v: f"{v:.2f}", formatters={"gflops": "{:.4f}".format}))
    print(f"\nwrote {out / 'ablations.csv'} and {out / 'ablations.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
