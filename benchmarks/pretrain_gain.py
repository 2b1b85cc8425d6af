"""The pretraining known answer: pretraining without labels, then a linear probe, against a linear probe of the same
encoder randomly initialised, on the embedded ``paired`` task (shape = pitch: the class is all the two modalities
share, so audio-visual correspondence can learn it without labels; fusionbench.data.synthetic).

For each seed: ``fusionbench pretrain`` on the training clips (labels ignored), then two ``fusionbench train
train.protocol=linear_probe`` runs — one from the pretraining run's ``encoder.pt`` (``init.model``), one from the
random initialisation of the same seed. Every run is a real CLI run recorded in the MLflow store (experiment
``pretrain-gain``; probe rows carry ``protocol`` / ``init`` in ``fusionbench leaderboard``). The gain is the paired
difference of test top-1 per seed and test condition (av, audio_only, video_only); its mean and 95 % t-interval over
the seeds (``reports.stats.summarize``) are the known answer: the interval must exclude zero. The pitch is linearly
readable from the random encoder's fbank features (the random probe scores 100 % on av and audio-only), so the gain
shows on the video path: video_only is the known answer's condition (the video encoder learns the shape from the
sound, without a label). early:contrastive is Zorro's "contrastive without masks", which it says collapses. Beside it, the pretraining run's collapse measures on the val split
(effective rank of each readout, alignment / uniformity of the audio-video pair: tasks/contrastive.py).

Writes a table to stdout and ``--csv`` (default results/pretrain_gain.csv): one row per (fusion, objective, seed) and
one ``mean`` row per (fusion, objective) with the interval.

    .venv/bin/python benchmarks/pretrain_gain.py [--seeds 0 1 2] [--epochs 5] [--probe-epochs 10] \
        [--fusions zorro:contrastive early:contrastive] [--store results/mlflow.db]
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from fusionbench import tracking
from fusionbench.reports.stats import summarize

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "pretrain-gain"
# The benchmark's data: the joint task's size and split (2,400 clips; 1,800 train), batch 32, small preset.
DATA = ["data.task=paired", "data.synth.num_clips=2400", "data.synth.val_frac=0.125", "data.synth.test_frac=0.125",
        "data.batch_size=32", "preset=small", "train.checkpoint_every=0", "eval.conditions=[av,audio_only,video_only]"]
PROBE = ["train.protocol=linear_probe", "train.lr=0.01", "train.weight_decay=0"]  # a linear head: no decay
CONDITIONS = ("av", "audio_only", "video_only")
COLLAPSE = ["val/erank/audio", "val/erank/video", "val/erank/fusion", "val/align", "val/uniform/audio",
            "val/uniform/video"]


def fusionbench(*args: str) -> None:
    cmd = [str(ROOT / ".venv" / "bin" / "fusionbench"), *args]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def newest(store: str, filter_string: str) -> object:
    runs = tracking.search_all(store, EXPERIMENT, f"attributes.status = 'FINISHED' and {filter_string}")
    if not runs:
        sys.exit(f"no finished run matches {filter_string}")
    return runs[-1]


def run_seed(fusion: str, objective: str, seed: int, args: argparse.Namespace) -> dict[str, object]:
    common = [f"fusion={fusion}", f"seed={seed}", *DATA, f"tracking.store={args.store}",
              f"tracking.experiment={EXPERIMENT}", "train.progress=false", *args.set]
    start = time.perf_counter()
    fusionbench("pretrain", f"objective={objective}", f"train.max_epochs={args.epochs}", *common)
    pre = newest(args.store, f"tags.`fb.kind` = 'pretrain' and tags.`fb.fusion` = '{fusion}' and "
                             f"tags.`fb.objective` = '{objective}' and tags.`fb.seed` = '{seed}'")
    pretrain_s = time.perf_counter() - start
    probe = [*common, *PROBE, f"train.max_epochs={args.probe_epochs}"]
    fusionbench("train", *probe, f"init.model={pre.data.tags['fb.checkpoint']}")
    fusionbench("train", *probe)
    row: dict[str, object] = {"fusion": fusion, "objective": objective, "seed": seed, "pretrain_run": pre.info.run_id}
    for init in (f"pretrain:{pre.info.run_id}", "random"):
        run = newest(args.store, f"tags.`fb.fusion` = '{fusion}' and tags.`fb.protocol` = 'linear_probe' and "
                                 f"tags.`fb.init` = '{init}' and tags.`fb.seed` = '{seed}'")
        name = "pretrained" if init != "random" else "random"
        row |= {f"{c}_{name}": run.data.metrics[f"test/{c}/top1"] for c in CONDITIONS}
    row |= {f"{c}_gain": row[f"{c}_pretrained"] - row[f"{c}_random"] for c in CONDITIONS}
    row |= {m.replace("val/", "pretrain_").replace("/", "_"): pre.data.metrics.get(m, float("nan")) for m in COLLAPSE}
    return row | {"wall_s": round(time.perf_counter() - start, 1), "pretrain_s": round(pretrain_s, 1)}


def summary_rows(rows: pd.DataFrame) -> list[dict[str, object]]:
    """Per (fusion, objective): the mean of every column over the seeds, and each condition's gain interval."""
    out = []
    for (fusion, objective), group in rows.groupby(["fusion", "objective"], sort=False):
        row: dict[str, object] = {"fusion": fusion, "objective": objective, "seed": "mean", "n_seeds": len(group)}
        row |= {c: group[c].mean() for c in group if c not in ("fusion", "objective", "seed", "pretrain_run")}
        for c in CONDITIONS:
            gain = summarize(group[f"{c}_gain"])
            row |= {f"{c}_gain_ci95_low": gain["ci95_low"], f"{c}_gain_ci95_high": gain["ci95_high"],
                    f"{c}_gain_excludes_zero": bool(gain["ci95_low"] > 0 or gain["ci95_high"] < 0)}
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5, help="pretraining epochs")
    parser.add_argument("--probe-epochs", type=int, default=5)
    parser.add_argument("--fusions", nargs="+", default=["zorro:contrastive", "early:contrastive"],
                        help="fusion:objective pairs (objective contrastive or mae)")
    parser.add_argument("--store", default="results/mlflow.db")
    parser.add_argument("--csv", default="results/pretrain_gain.csv")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    args = parser.parse_args(argv)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    done = []
    for pair in args.fusions:
        for seed in args.seeds:
            done.append(run_seed(*pair.split(":"), seed, args))
            rows = pd.DataFrame(done)  # written after every seed: a stopped run keeps what it measured
            table = pd.concat([rows, pd.DataFrame(summary_rows(rows))], ignore_index=True)
            table.to_csv(args.csv, index=False, float_format="%.4f", quoting=csv.QUOTE_MINIMAL)
    shown = ["fusion", "objective", "seed", *(f"{c}_{k}" for c in CONDITIONS for k in ("pretrained", "random", "gain")),
             *(f"{c}_gain_ci95_{e}" for c in CONDITIONS for e in ("low", "high")), "pretrain_erank_audio",
             "pretrain_erank_video", "pretrain_align"]
    print(table[[c for c in shown if c in table]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
