"""leaderboard.csv → robustness.csv: AUC over severity and effective robustness vs late fusion."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fusionbench.reports.columns import BASELINE, CORRUPTION_KINDS, GROUP, ROBUSTNESS_COLUMNS, condition_kind, severity



SAME_SCORE = 1e-6  # scores (fractions) closer than this are equal: float32 metrics vs float64 rates


def _first(frame: pd.DataFrame, column: str) -> float:
    values = frame[column].dropna() if column in frame else pd.Series(dtype=float)
    return float(values.iloc[0]) if len(values) else math.nan


def reference_rate(rows: pd.DataFrame) -> float:
    """max(chance, majority-class rate) of leaderboard rows; NaN where neither was logged."""
    values = [v for c in ("chance", "majority") if np.isfinite(v := _first(rows, c))]
    return max(values) if values else math.nan


def learnt(clean: pd.DataFrame) -> bool:
    """Whether a clean (``av``) leaderboard row is above what a model that learnt nothing scores: its 95 % CI lies
    above max(chance, majority) by more than float32 rounding (its mean, with one seed). True where neither rate
    was logged (older runs: nothing to check against; the markdown says so). False without a clean row."""
    if clean.empty:
        return False
    row = clean.iloc[0]
    ref = reference_rate(clean)
    if not np.isfinite(ref):
        return True
    low = row["ci95_low"] if row["n_seeds"] > 1 and np.isfinite(row["ci95_low"]) else row["mean"]
    return bool(low > ref + SAME_SCORE)


def robustness_table(board: pd.DataFrame, metrics: dict[str, str]) -> pd.DataFrame:
    """Per entry × corruption kind, on the dataset's headline metric (seed means):

    - ``auc``: the curve runs over severity ranks x = 0 (clean ``av``), 1..k (the kind's levels by increasing
      severity); auc = trapezoid(y, x) / k, the mean height of the curve in the metric's units, so a model that
      loses nothing scores its clean accuracy. ``relative_auc`` = auc / clean. Compare only rows with equal ``levels``.
    - ``effective_robustness`` (relative to late fusion at the same dataset and preset): at each level ℓ,
      ER_ℓ = acc(ℓ) − acc(clean) · acc_late(ℓ) / acc_late(clean), i.e. the corrupted accuracy above what late
      fusion's clean → corrupted retention ratio predicts from this model's clean accuracy; averaged over the
      levels both have. 0 for late fusion by construction, NaN where late fusion was not run.
    - Both are NaN (shown n/a) unless the clean score is above chance and the majority-class rate (:func:`learnt`):
      a model that names the majority class whatever the input loses nothing under corruption, and is not robust.
      Effective robustness also needs late fusion's clean score above them (its retention ratio is noise otherwise).
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
            late_learnt = learnt(late[late["condition"] == "av"])
            entry_learnt = learnt(clean_row)
            for kind in CORRUPTION_KINDS:
                points = entry[kinds.loc[entry.index] == kind]
                if points.empty:
                    continue
                points = points.assign(_s=points["condition"].map(lambda c: severity(*condition_kind(c))))
                points = points.sort_values("_s")
                y = np.r_[clean, points["mean"].to_numpy(float)]
                auc = float(np.trapezoid(y, dx=1.0) / (len(y) - 1))
                ers = []
                if entry_learnt and late_learnt and "av" in late_mean and late_mean["av"] > 0:
                    for cond, acc in zip(points["condition"], points["mean"]):
                        if cond in late_mean:
                            ers.append(acc - clean * late_mean[cond] / late_mean["av"])
                rows.append({
                    **dict(zip(GROUP, key)), "kind": kind, "metric": metric,
                    "levels": ";".join(f"{condition_kind(c)[1]:g}" for c in points["condition"]),
                    "clean": clean, "mean_corrupted": float(points["mean"].mean()), "auc": auc,
                    "relative_auc": auc / clean if clean and entry_learnt else math.nan,
                    "effective_robustness": float(np.mean(ers)) if ers else math.nan,
                    "n_seeds": int(min(points["n_seeds"].min(), clean_row["n_seeds"].min() if len(clean_row) else 0)),
                    "chance": _first(entry, "chance"), "majority": _first(entry, "majority"),
                })
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


