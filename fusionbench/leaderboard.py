"""FINISHED runs → ``runs.csv`` → ``leaderboard.csv`` (mean ± t-CI over seeds) → markdown, plots, robustness.

Reads only FINISHED runs made by :func:`fusionbench.tracking.tracked_run` (they carry ``fb.*`` tags). If an identity
(fusion, dataset, config hash, seed) finished more than once, its latest run counts, so ``n_seeds`` counts seeds.

Test metrics are named ``test/<condition>/<metric>``; ``model/params``, ``model/gflops``, ``model/gflops_masked``,
``time/train_s``, ``time/test_s`` and ``train/epochs`` are per-run figures repeated on every row of that run, and so is
the leak probe of the run's synthetic set (``data/leak_probe/*`` metrics and ``fb.leak_probe.*`` tags, logged by
:func:`fusionbench.data.prepare.log_leak_probe`): ``leak_probe_*`` columns, after the others, in runs.csv and
leaderboard.csv. leaderboard.md shows the probe per dataset and flags ⚠ LEAK where one modality alone beats the
task's unimodal ceiling by more than the probe's tolerance.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from fusionbench import tracking
from fusionbench.config import project_path

# ------------------------------------------------------------------------------------------- the column contract

RUN_KEYS = ["run_id", "fusion", "dataset", "preset", "config_hash", "seed", "condition", "status"]
COST_METRICS = {  # runs.csv column → MLflow metric
    "params": "model/params",
    "gflops": "model/gflops",
    "gflops_masked": "model/gflops_masked",
    "train_s": "time/train_s",
    "test_s": "time/test_s",
    "epochs": "train/epochs",  # epochs run: fewer than train.max_epochs where train.stop_val_loss stopped the run
}
KNOWN_METRICS = ["top1", "top5", "mAP", "loss"]  # runs.csv metric columns come in this order, others after, sorted
PROBE_METRICS = {  # column → MLflow metric of the run's leak probe (accuracy of one modality alone; its ceiling)
    "leak_probe_audio": "data/leak_probe/audio",
    "leak_probe_video": "data/leak_probe/video",
    "leak_probe_ceiling": "data/leak_probe/ceiling",
    "leak_probe_tolerance": "data/leak_probe/tolerance",
}
PROBE_MODALITIES = ("audio", "video")
PROBE_TOLERANCE = 0.05  # the probe's smallest tolerance: used where a run logged none
# leak_probe_leak: "none", or the leaking modalities joined by ";"; empty where no probe was recorded
PROBE_COLUMNS = ["leak_probe_set", *PROBE_METRICS, "leak_probe_leak"]
# runs.csv = RUN_KEYS + metric columns (KNOWN_METRICS first) + list(COST_METRICS) + PROBE_COLUMNS

LEADERBOARD_COLUMNS = [
    "fusion", "dataset", "condition", "metric", "mean", "std", "n_seeds", "ci95_low", "ci95_high",
    "params", "gflops", "preset", "config_hash",
    *PROBE_METRICS, "leak_probe_leak",  # the entry's probe (mean over its runs; leak: any run's)
]
ROBUSTNESS_COLUMNS = [
    "fusion", "dataset", "preset", "config_hash", "kind", "metric", "levels", "clean", "mean_corrupted",
    "auc", "relative_auc", "effective_robustness", "n_seeds",
]
GROUP = ["fusion", "dataset", "preset", "config_hash"]  # one leaderboard entry (seeds are averaged within it)
CLEAN_CONDITIONS = ["av", "audio_only", "video_only"]
CORRUPTION_KINDS = ["audio_snr", "video_noise", "video_occlusion"]
_CORRUPTION = re.compile(r"^(audio_snr|video_noise|video_occlusion)_(-?\d+(?:\.\d+)?)$")
BASELINE = "late"  # effective robustness is measured against late fusion's clean → corrupted relation
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


# ---------------------------------------------------------------------------------------------------- statistics


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (scipy if present, else a table)."""
    if df < 1:
        return math.nan
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        below = [k for k in _T975 if k <= df]
        return _T975[max(below)]  # rounding df down (and 1.980 beyond 120) keeps the interval conservative


def summarize(values: pd.Series) -> dict[str, float]:
    """mean, sample std (ddof=1), n, and the 95% t-interval mean ± t(0.975, n-1)·std/√n; NaN spread for n = 1."""
    v = values.dropna().astype(float)
    n = len(v)
    mean = v.mean() if n else math.nan
    std = v.std(ddof=1) if n > 1 else math.nan
    half = t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n_seeds": n, "ci95_low": mean - half, "ci95_high": mean + half}


# ---------------------------------------------------------------------------------------------------- conditions


def condition_kind(name: str) -> tuple[str | None, float]:
    """(corruption kind, level) of a condition name; (None, 0) for clean conditions and unknown names."""
    match = _CORRUPTION.match(name)
    return (match.group(1), float(match.group(2))) if match else (None, 0.0)


def severity(kind: str, level: float) -> float:
    """Larger = more corrupted (SNR goes the other way)."""
    return -level if kind == "audio_snr" else level


def condition_order(name: str) -> tuple:
    """av, audio_only, video_only; then corruptions by kind and increasing severity; then anything else."""
    if name in CLEAN_CONDITIONS:
        return (0, CLEAN_CONDITIONS.index(name), 0.0, name)
    kind, level = condition_kind(name)
    if kind is not None:
        return (1, CORRUPTION_KINDS.index(kind), severity(kind, level), name)
    return (2, 0, 0.0, name)


# ----------------------------------------------------------------------------------------------------- leak probe


def _leaking(row: pd.Series) -> str | float:
    """"none", the modalities above ceiling + tolerance joined by ";", or NaN without a probe."""
    if not all(np.isfinite(row[c]) for c in ("audio", "video", "ceiling")):
        return math.nan
    tolerance = row["tolerance"] if np.isfinite(row["tolerance"]) else PROBE_TOLERANCE
    leaks = [m for m in PROBE_MODALITIES if row[m] > row["ceiling"] + tolerance]
    return ";".join(leaks) or "none"


def probe_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run_id, dataset, synthetic, set, audio, video, ceiling, tolerance, leak, status, error.

    ``leak`` is recomputed from the logged numbers (not taken from the tag), so a probe above its ceiling is flagged
    whatever logged it. ``status``/``error``: the ``fb.leak_probe`` tags (why a run has no probe).
    """
    columns = ["run_id", "dataset", "synthetic", "set", "audio", "video", "ceiling", "tolerance", "leak", "status",
               "error"]
    if runs.empty:
        return pd.DataFrame(columns=columns)

    def col(name: str, numeric: bool = False) -> pd.Series:
        values = runs.get(name, pd.Series(np.nan if numeric else None, index=runs.index, dtype=float if numeric
                                          else object))
        return pd.to_numeric(values, errors="coerce") if numeric else values

    frame = pd.DataFrame({
        "run_id": runs["run_id"],
        "dataset": col("tags.fb.dataset"),
        "synthetic": col("params.data.dataset").astype(str).eq("synth"),
        "set": col("tags.fb.leak_probe.set"),
        **{c.removeprefix("leak_probe_"): col(f"metrics.{m}", numeric=True) for c, m in PROBE_METRICS.items()},
        "status": col("tags.fb.leak_probe"),
        "error": col("tags.fb.leak_probe.error"),
    })
    frame["leak"] = frame.apply(_leaking, axis=1) if len(frame) else pd.Series(dtype=object)
    return frame[columns].reset_index(drop=True)


def _probe_columns(probes: pd.DataFrame) -> pd.DataFrame:
    """probe_table → run_id + PROBE_COLUMNS (the runs.csv layout)."""
    out = pd.DataFrame({"run_id": probes["run_id"], "leak_probe_set": probes["set"]})
    for column in PROBE_METRICS:
        out[column] = probes[column.removeprefix("leak_probe_")]
    out["leak_probe_leak"] = probes["leak"]
    return out


def _union_leak(values: pd.Series) -> str | float:
    """Leak flags of several runs → one: NaN if none had a probe, else "none" or every leaking modality."""
    seen = [v for v in values if isinstance(v, str)]
    if not seen:
        return math.nan
    leaks = sorted({m for v in seen if v != "none" for m in v.split(";")})
    return ";".join(leaks) or "none"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def probe_markdown(probes: pd.DataFrame, dataset: str) -> tuple[list[str], list[str]]:
    """(lines for the dataset's section, notes for the leaderboard's Notes) on the leak probe of its runs' sets.

    One table row per distinct probe (a generated set): audio alone, video alone, the unimodal ceiling (+ the
    tolerance) and the verdict; a ⚠ LEAK warning above it when a modality alone beats ceiling + tolerance. Nothing
    for datasets that are not synthetic (no stated ceiling to check).
    """
    sel = probes[(probes["dataset"] == dataset)]
    if sel.empty or not sel["synthetic"].any():
        return [], []
    done = sel.dropna(subset=["audio", "video", "ceiling"])
    missing = sel[~sel.index.isin(done.index)]
    if done.empty:
        why = missing.dropna(subset=["error"])
        if len(why):
            status = why["status"].iloc[-1]
            why = f" ({status if isinstance(status, str) else 'failed'}: {why['error'].iloc[-1]})"
        else:
            why = ""
        return [f"Leak probe: not recorded by these runs{why}. `fusionbench train` and `fusionbench sweep` log it "
                "for synthetic sets (it needs scikit-learn).", ""], []
    keys = ["set", "audio", "video", "ceiling", "tolerance"]
    sets = (done.assign(set=done["set"].fillna("–"), tolerance=done["tolerance"].fillna(PROBE_TOLERANCE))
            .groupby(keys, sort=False, dropna=False).agg(runs=("run_id", "nunique"), leak=("leak", "first"))
            .reset_index())
    warnings, notes, rows = [], [], []
    for _, s in sets.iterrows():
        leaks = [m for m in s["leak"].split(";") if m != "none"]
        limit = f"ceiling {_pct(s['ceiling'])} + {100 * s['tolerance']:.1f} points of tolerance"
        for m in leaks:
            text = f"{m} alone reaches {_pct(s[m])} on set `{s['set']}` ({limit})"
            warnings.append(f"> ⚠ **LEAK**: {text}: a single modality predicts the label, so this task's known "
                            f"answer can come from a generator bug; the results below do not measure fusion.")
            notes.append(f"⚠ LEAK in {dataset}: {text}.")
        cells = [f"**{_pct(s[m])}**" if m in leaks else _pct(s[m]) for m in PROBE_MODALITIES]
        verdict = f"⚠ LEAK: {', '.join(leaks)}" if leaks else "ok"
        rows.append(f"| {s['set']} | {s['runs']} | {' | '.join(cells)} | {_pct(s['ceiling'])} "
                    f"(+{100 * s['tolerance']:.1f}) | {verdict} |")
    lines = [line for warning in warnings for line in (warning, "")]
    lines += ["Leak probe (a ridge classifier on each modality alone of the generated set, balanced test accuracy; "
              "it must stay at the task's unimodal ceiling):", "",
              "| set | runs | audio alone | video alone | unimodal ceiling (+tolerance) | probe |",
              "|---|--:|--:|--:|--:|---|", *rows, ""]
    if len(missing):
        lines += [f"{missing['run_id'].nunique()} run(s) of {dataset} recorded no leak probe.", ""]
    return lines, notes


# ------------------------------------------------------------------------------------------------------ runs.csv


def finished_runs(store: str | Path, experiment: str) -> pd.DataFrame:
    """FINISHED runs with fb tags, the latest per identity."""
    frame = tracking.runs_frame(store, experiment)
    if frame.empty or "tags.fb.identity" not in frame:
        return frame.iloc[0:0]
    frame = frame[(frame["status"] == "FINISHED") & frame["tags.fb.identity"].notna()]
    return frame.sort_values("start_time", kind="stable").drop_duplicates("tags.fb.identity", keep="last")


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run × test condition; a column per test metric; per-run costs repeated on each row."""
    test_cols = [c for c in runs.columns if c.startswith("metrics.test/") and c.count("/") >= 2]
    if runs.empty or not test_cols:
        return pd.DataFrame(columns=RUN_KEYS + KNOWN_METRICS[:1] + list(COST_METRICS) + PROBE_COLUMNS)
    base = pd.DataFrame({
        "run_id": runs["run_id"],
        "fusion": runs["tags.fb.fusion"],
        "dataset": runs["tags.fb.dataset"],
        "preset": runs.get("tags.fb.preset", pd.Series(index=runs.index, dtype=object)),
        "config_hash": runs["tags.fb.config_hash"],
        "seed": pd.to_numeric(runs["tags.fb.seed"]).astype(int),
        "status": runs["status"],
    })
    for column, metric in COST_METRICS.items():
        base[column] = runs.get(f"metrics.{metric}", pd.Series(np.nan, index=runs.index))
    long = runs[["run_id", *test_cols]].melt(id_vars="run_id", var_name="name", value_name="value").dropna()
    parts = long["name"].str.removeprefix("metrics.test/").str.rsplit("/", n=1, expand=True)
    long = long.assign(condition=parts[0], metric=parts[1])
    wide = long.pivot_table(index=["run_id", "condition"], columns="metric", values="value", aggfunc="last")
    wide = wide.reset_index()
    wide.columns.name = None
    metrics = [m for m in KNOWN_METRICS if m in wide] + sorted(c for c in wide if c not in KNOWN_METRICS
                                                               and c not in ("run_id", "condition"))
    table = base.merge(wide, on="run_id").merge(_probe_columns(probe_table(runs)), on="run_id", how="left")
    table = table[RUN_KEYS + metrics + list(COST_METRICS) + PROBE_COLUMNS]
    order = table["condition"].map(condition_order)
    return (table.assign(_o=order).sort_values(["dataset", "fusion", "preset", "config_hash", "_o", "seed"])
            .drop(columns="_o").reset_index(drop=True))


# ----------------------------------------------------------------------------------------------- leaderboard.csv


def leaderboard_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per fusion × dataset × preset × config hash × condition × metric: mean, std, n_seeds, 95% CI."""
    metrics = [c for c in table.columns if c not in RUN_KEYS and c not in COST_METRICS and c not in PROBE_COLUMNS]
    if table.empty or not metrics:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    long = table.melt(id_vars=[*GROUP, "condition", "seed", "params", "gflops"], value_vars=metrics,
                      var_name="metric", value_name="value").dropna(subset=["value"])
    rows = []
    for key, group in long.groupby([*GROUP, "condition", "metric"], sort=False, dropna=False):
        row = dict(zip([*GROUP, "condition", "metric"], key))
        row.update(summarize(group["value"]))
        row["params"], row["gflops"] = group["params"].mean(), group["gflops"].mean()
        rows.append(row)
    board = pd.DataFrame(rows)
    if set(PROBE_COLUMNS) <= set(table.columns):  # the entry's probe: one per run, whatever the conditions
        per_run = table.drop_duplicates("run_id")
        probe = per_run.groupby(GROUP, sort=False, dropna=False).agg(
            **{c: (c, "mean") for c in PROBE_METRICS}, leak_probe_leak=("leak_probe_leak", _union_leak))
        board = board.merge(probe.reset_index(), on=GROUP, how="left")
    board = board.reindex(columns=[*board.columns, *(c for c in LEADERBOARD_COLUMNS if c not in board)])
    board["_o"] = board["condition"].map(condition_order)
    board = board.sort_values(["dataset", "preset", "fusion", "config_hash", "_o", "metric"])
    return board[LEADERBOARD_COLUMNS].reset_index(drop=True)


def headline_metric(runs: pd.DataFrame, board: pd.DataFrame, dataset: str) -> str | None:
    """mAP for multi-label datasets, top1 otherwise (falling back to whatever was logged)."""
    available = set(board.loc[board["dataset"] == dataset, "metric"])
    sel = runs[runs["tags.fb.dataset"] == dataset] if "tags.fb.dataset" in runs else runs.iloc[0:0]
    flags = sel.get("params.data.multilabel", pd.Series(dtype=object))
    multilabel = flags.astype(str).str.lower().eq("true").any()
    preferred = ["mAP", "top1"] if multilabel else ["top1", "mAP"]
    for metric in preferred + ["top5"] + sorted(available):
        if metric in available and metric != "loss":
            return metric
    return next(iter(sorted(available)), None)


# -------------------------------------------------------------------------------------------------- robustness


def robustness_table(board: pd.DataFrame, metrics: dict[str, str]) -> pd.DataFrame:
    """Per entry × corruption kind, on the dataset's headline metric (seed means):

    - ``auc``: the curve runs over severity ranks x = 0 (clean ``av``), 1..k (the kind's levels by increasing
      severity); auc = trapezoid(y, x) / k, the mean height of the curve in the metric's units, so a model that
      loses nothing scores its clean accuracy. ``relative_auc`` = auc / clean. Compare only rows with equal ``levels``.
    - ``effective_robustness`` (relative to late fusion at the same dataset and preset): at each level ℓ,
      ER_ℓ = acc(ℓ) − acc(clean) · acc_late(ℓ) / acc_late(clean), i.e. the corrupted accuracy above what late
      fusion's clean → corrupted retention ratio predicts from this model's clean accuracy; averaged over the
      levels both have. 0 for late fusion by construction, NaN where late fusion was not run.
    """
    rows = []
    for (dataset, metric) in metrics.items():
        sel = board[(board["dataset"] == dataset) & (board["metric"] == metric)]
        kinds = sel["condition"].map(lambda c: condition_kind(c)[0])
        for key, entry in sel.groupby(GROUP, sort=False, dropna=False):
            clean_row = entry[entry["condition"] == "av"]
            clean = float(clean_row["mean"].iloc[0]) if len(clean_row) else math.nan
            late = sel[(sel["fusion"] == BASELINE) & (sel["preset"].astype(str) == str(key[2]))]
            late_mean = late.groupby("condition")["mean"].mean()
            for kind in CORRUPTION_KINDS:
                points = entry[kinds.loc[entry.index] == kind]
                if points.empty:
                    continue
                points = points.assign(_s=points["condition"].map(lambda c: severity(*condition_kind(c))))
                points = points.sort_values("_s")
                y = np.r_[clean, points["mean"].to_numpy(float)]
                auc = float(np.trapezoid(y, dx=1.0) / (len(y) - 1))
                ers = []
                if "av" in late_mean and late_mean["av"] > 0:
                    for cond, acc in zip(points["condition"], points["mean"]):
                        if cond in late_mean:
                            ers.append(acc - clean * late_mean[cond] / late_mean["av"])
                rows.append({
                    **dict(zip(GROUP, key)), "kind": kind, "metric": metric,
                    "levels": ";".join(f"{condition_kind(c)[1]:g}" for c in points["condition"]),
                    "clean": clean, "mean_corrupted": float(points["mean"].mean()), "auc": auc,
                    "relative_auc": auc / clean if clean else math.nan,
                    "effective_robustness": float(np.mean(ers)) if ers else math.nan,
                    "n_seeds": int(min(points["n_seeds"].min(), clean_row["n_seeds"].min() if len(clean_row) else 0)),
                })
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


# ---------------------------------------------------------------------------------------------------- markdown


def entry_table(board: pd.DataFrame, dataset: str, metric: str) -> pd.DataFrame:
    """The dataset's entries (GROUP columns + ``label``), by preset and then best clean ``av`` score first."""
    sel = board[(board["dataset"] == dataset) & (board["metric"] == metric)]
    av = sel[sel["condition"] == "av"].set_index(GROUP)["mean"]
    entries = sel[GROUP].drop_duplicates().reset_index(drop=True)
    entries["_av"] = [av.get(tuple(row), math.nan) for row in entries[GROUP].itertuples(index=False)]
    entries = entries.sort_values(["preset", "_av", "fusion"], ascending=[True, False, True], na_position="last")
    entries = entries.drop(columns="_av").reset_index(drop=True)
    entries["label"] = _labels(entries)
    return entries


def _labels(entries: pd.DataFrame) -> pd.Series:
    """Row label per entry: the fusion name, plus preset and hash only where needed to tell entries apart."""
    labels = entries["fusion"].astype(str)
    if labels.duplicated(keep=False).any():
        with_preset = labels + " (" + entries["preset"].astype(str) + ")"
        labels = labels.where(~labels.duplicated(keep=False), with_preset)
        if labels.duplicated(keep=False).any():
            full = entries["fusion"] + " (" + entries["preset"].astype(str) + ", " + entries["config_hash"] + ")"
            labels = labels.where(~labels.duplicated(keep=False), full)
    return labels


def _fmt_count(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x / 1e6:.2f} M" if x >= 1e5 else f"{x / 1e3:.1f} k"


def _fmt_gflops(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:.3g}"


def known_answer_lines(dataset: str) -> list[str]:
    """For a synthetic task (``synth-<task>``): what it must show, and a flag if it is a stretch task."""
    from fusionbench.data.synthetic import KNOWN_ANSWERS, STRETCH_TASKS

    task = dataset.removeprefix("synth-") if dataset.startswith("synth-") else None
    if task not in KNOWN_ANSWERS:
        return []
    lines = [f"Known answer: {KNOWN_ANSWERS[task]}."]
    if task in STRETCH_TASKS:
        lines += ["", f"**⚠ Stretch task, not learnt:** {STRETCH_TASKS[task]}."]
    return [*lines, ""]


def dataset_markdown(board: pd.DataFrame, dataset: str, metric: str, entries: pd.DataFrame,
                     probe: list[str] | None = None) -> list[str]:
    """The dataset's section: heading, ``probe`` lines (see :func:`probe_markdown`), the results table."""
    sel = board[(board["dataset"] == dataset) & (board["metric"] == metric)]
    conditions = sorted(sel["condition"].unique(), key=condition_order)
    percent = metric in ("top1", "top5", "mAP") and sel["mean"].between(0, 1).all()
    scale = 100.0 if percent else 1.0
    best = sel.groupby("condition")["mean"].max()
    header = ["fusion", "seeds", *conditions, "params", "GFLOPs"]
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join(['---'] + ['--:'] * (len(header) - 1))}|"]
    for _, entry in entries.iterrows():
        mine = sel.merge(entry[GROUP].to_frame().T, on=GROUP)
        n_row = int(mine["n_seeds"].max())
        cells = []
        for cond in conditions:
            hit = mine[mine["condition"] == cond]
            if hit.empty:
                cells.append("–")
                continue
            r = hit.iloc[0]
            text = f"{r['mean'] * scale:.1f}" if percent else f"{r['mean']:.3g}"
            if r["n_seeds"] > 1:
                half = (r["ci95_high"] - r["mean"]) * scale
                text += f" ± {half:.1f}" if percent else f" ± {half:.2g}"
            if r["mean"] == best[cond]:
                text = f"**{text}**"
            if r["n_seeds"] != n_row:
                text += f" (n={int(r['n_seeds'])})"
            cells.append(text)
        first = mine.iloc[0]
        lines.append(f"| {entry['label']} | {n_row} | {' | '.join(cells)} | {_fmt_count(first['params'])} | "
                     f"{_fmt_gflops(first['gflops'])} |")
    unit = f"{metric} (%)" if percent else metric
    return [f"## {dataset}", "", *(probe or []), f"Headline metric: **{unit}** on the test split.", "", *lines, ""]


# ------------------------------------------------------------------------------------------------------- plots


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def pareto_plot(board: pd.DataFrame, dataset: str, metric: str, entries: pd.DataFrame, path: Path) -> str | None:
    """Accuracy on ``av`` vs GFLOPs with 95% CI bars and the Pareto front; returns a note instead if impossible."""
    sel = board[(board["dataset"] == dataset) & (board["metric"] == metric) & (board["condition"] == "av")]
    sel = sel[np.isfinite(sel["gflops"].astype(float))] if len(sel) else sel
    if sel.empty:
        return f"{dataset}: no Pareto plot (no run logged `model/gflops` together with `test/av/{metric}`)."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = sel.merge(entries, on=GROUP, how="left").reset_index(drop=True)
    labels = sel["label"]
    x, y = sel["gflops"].to_numpy(float), sel["mean"].to_numpy(float)
    err = np.nan_to_num(sel["ci95_high"].to_numpy(float) - y)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
    for xi, yi, label in zip(x, y, labels):
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)
    order = np.lexsort((-y, x))
    front, top = [], -np.inf
    for i in order:
        if y[i] > top:
            front.append(i)
            top = y[i]
    ax.step(x[front], y[front], where="post", color="tab:red", alpha=0.6, label="Pareto front")
    if x.min() > 0 and x.max() / x.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per clip (dense)")
    ax.set_ylabel(f"test {metric} on av (mean ± 95% CI)")
    ax.set_title(f"{dataset}: accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def robustness_plot(board: pd.DataFrame, dataset: str, metric: str, entries: pd.DataFrame,
                    path: Path) -> str | None:
    """Metric vs corruption level, one panel per kind, clean ``av`` as the uncorrupted end of each curve."""
    sel = board[(board["dataset"] == dataset) & (board["metric"] == metric)]
    kinds = [k for k in CORRUPTION_KINDS if sel["condition"].map(lambda c: condition_kind(c)[0] == k).any()]
    if not kinds:
        return f"{dataset}: no robustness plot (no corrupted eval conditions were logged)."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        levels = sorted({condition_kind(c)[1] for c in sel["condition"] if condition_kind(c)[0] == kind})
        gap = max(np.diff(levels).max() if len(levels) > 1 else 5.0, 1.0)
        clean_x = max(levels) + gap if kind == "audio_snr" else 0.0  # SNR: "clean" drawn one step above the best
        for _, entry in entries.iterrows():
            mine = sel.merge(entry[GROUP].to_frame().T, on=GROUP)
            rows = zip(mine["condition"], mine["mean"], mine["ci95_high"])
            pts = [(condition_kind(c)[1], m, h - m) for c, m, h in rows if condition_kind(c)[0] == kind]
            clean = mine[mine["condition"] == "av"]
            if len(clean):
                pts.append((clean_x, clean["mean"].iloc[0], clean["ci95_high"].iloc[0] - clean["mean"].iloc[0]))
            pts.sort(key=lambda p: severity(kind, p[0]) if p[0] != clean_x or kind != "audio_snr" else -np.inf)
            xs, ys, es = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(xs, ys, yerr=np.nan_to_num(es), marker="o", capsize=2, label=entry["label"])
        if kind == "audio_snr":
            ax.invert_xaxis()
            ticks = [clean_x, *levels]
            ax.set_xticks(ticks, ["clean", *(f"{v:g}" for v in levels)])
            ax.set_xlabel("audio SNR (dB)")
        else:
            axis = {"video_noise": "pixel noise σ", "video_occlusion": "occluded fraction"}[kind]
            ax.set_xlabel(f"{axis} (0 = clean)")
        ax.set_title(kind)
        ax.set_ylabel(f"test {metric}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{dataset}: robustness (mean ± 95% CI over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------------------------------- the entry


def write_leaderboard(store: str | Path, experiment: str, out_dir: str | Path = "results",
                      notes: list[str] | None = None) -> dict[str, Path]:
    """Write runs.csv, leaderboard.csv, robustness.csv, leaderboard.md and plots; return {name: path}."""
    out = project_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = finished_runs(store, experiment)
    table = runs_table(runs)
    board = leaderboard_table(table)
    datasets = sorted(board["dataset"].unique())
    metrics = {d: m for d in datasets if (m := headline_metric(runs, board, d)) is not None}
    robust = robustness_table(board, metrics)
    probes = probe_table(runs)

    paths = {"runs": out / "runs.csv", "leaderboard": out / "leaderboard.csv",
             "robustness": out / "robustness.csv", "markdown": out / "leaderboard.md"}
    table.to_csv(paths["runs"], index=False)
    board.to_csv(paths["leaderboard"], index=False)
    robust.to_csv(paths["robustness"], index=False)

    skipped_notes, sections, leak_notes = [], [], []
    for dataset, metric in metrics.items():
        entries = entry_table(board, dataset, metric)
        probe_lines, notes_here = probe_markdown(probes, dataset)
        leak_notes += notes_here
        sections += dataset_markdown(board, dataset, metric, entries, [*known_answer_lines(dataset), *probe_lines])
        for kind, plot in (("pareto", pareto_plot), ("robustness", robustness_plot)):
            path = out / f"{kind}_{_safe(dataset)}.png"
            note = plot(board, dataset, metric, entries, path)
            if note:
                skipped_notes.append(note)
            else:
                paths[f"{kind}_{dataset}"] = path
                sections.append(f"![{kind} {dataset}]({path.name})")
        rob = robust[robust["dataset"] == dataset]
        if len(rob):
            sections += ["", "Robustness (area under the curve over severity ranks; effective robustness vs late "
                         "fusion's retention — formulas in `fusionbench/leaderboard.py`):", "",
                         *_robust_lines(rob, entries)]
        sections.append("")

    seeds = sorted(table["seed"].unique()) if len(table) else []
    no_test = len(runs) - table["run_id"].nunique() if len(runs) else 0
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# fusionbench leaderboard", "",
        f"_Generated {when} from experiment `{experiment}`: {table['run_id'].nunique()} finished runs, "
        f"{board['fusion'].nunique()} fusion(s), {len(datasets)} dataset(s), "
        f"seeds {', '.join(map(str, seeds)) or '–'}._",
        "",
        "Cells: mean ± half-width of the 95% t-interval over seeds (no ± with one seed); the best mean per column "
        "is **bold**; `(n=k)` marks a cell with fewer seeds than its row.", "",
    ]
    if not datasets:
        head += ["No finished runs with test metrics yet.", ""]
    tail = []
    all_notes = [f"{no_test} finished runs logged no `test/...` metrics and are not in the tables."] if no_test else []
    all_notes = leak_notes + all_notes + skipped_notes + list(notes or [])
    if all_notes:
        tail = ["## Notes", "", *(f"- {n}" for n in all_notes), ""]
    paths["markdown"].write_text("\n".join(head + sections + tail))
    return paths


def _robust_lines(rob: pd.DataFrame, entries: pd.DataFrame) -> list[str]:
    order = entries.reset_index().rename(columns={"label": "entry", "index": "_o"})
    frame = rob.merge(order, on=GROUP, how="left").sort_values(["_o", "kind"], kind="stable")
    cols = ["entry", "kind", "levels", "clean", "auc", "relative_auc", "effective_robustness", "n_seeds"]
    lines = [f"| {' | '.join(cols)} |", f"|{'|'.join(['---'] * 3 + ['--:'] * (len(cols) - 3))}|"]
    for _, r in frame.iterrows():
        vals = [r["entry"], r["kind"], r["levels"].replace(";", ", ")]
        vals += ["–" if not np.isfinite(r[c]) else f"{round(r[c], 3) + 0.0:.3f}" for c in cols[3:7]]
        vals.append(str(r["n_seeds"]))
        lines.append(f"| {' | '.join(vals)} |")
    return lines
