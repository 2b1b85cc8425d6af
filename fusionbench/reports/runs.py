"""MLflow runs → the runs that count (FINISHED, not diverged; the latest per identity) → runs.csv rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fusionbench import tracking
from fusionbench.reports.columns import (COST_METRICS, KNOWN_METRICS, PROBE_COLUMNS, REFERENCE_METRICS, RUN_DEFAULTS,
                                      RUN_KEYS, condition_order)
from fusionbench.reports.probe import _probe_columns, probe_table



DIVERGED_COLUMNS = ["fusion", "dataset", "preset", "config_hash", "seed", "run_id", "error"]


def _is_diverged(frame: pd.DataFrame) -> pd.Series:
    """``fb.status = diverged`` (tracking's tag for a run whose loss became NaN/inf; it ends FAILED)."""
    return frame.get("tags.fb.status", pd.Series(None, index=frame.index, dtype=object)).eq("diverged")


def counted_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs the tables rank: FINISHED, with fb tags, not diverged; the latest per identity."""
    if frame.empty or "tags.fb.identity" not in frame:
        return frame.iloc[0:0]
    frame = frame[(frame["status"] == "FINISHED") & frame["tags.fb.identity"].notna() & ~_is_diverged(frame)]
    return frame.sort_values("start_time", kind="stable").drop_duplicates("tags.fb.identity", keep="last")


def diverged_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Identities whose latest counted-or-diverged run diverged: DIVERGED_COLUMNS, ``error`` = the ``fb.error`` tag.

    Listed apart by the markdown, never ranked: a later FINISHED run of the same identity supersedes a divergence.
    """
    if frame.empty or "tags.fb.identity" not in frame:
        return pd.DataFrame(columns=DIVERGED_COLUMNS)
    frame = frame[frame["tags.fb.identity"].notna()]
    diverged = _is_diverged(frame)
    relevant = frame[diverged | ((frame["status"] == "FINISHED") & ~diverged)]
    latest = relevant.sort_values("start_time", kind="stable").drop_duplicates("tags.fb.identity", keep="last")
    latest = latest[_is_diverged(latest)]
    out = pd.DataFrame({
        "fusion": latest["tags.fb.fusion"], "dataset": latest["tags.fb.dataset"],
        "preset": latest.get("tags.fb.preset"), "config_hash": latest["tags.fb.config_hash"],
        "seed": pd.to_numeric(latest["tags.fb.seed"]).astype(int), "run_id": latest["run_id"],
        "error": latest.get("tags.fb.error", pd.Series("", index=latest.index)).fillna(""),
    }, columns=DIVERGED_COLUMNS)
    return out.sort_values(["dataset", "fusion", "seed"]).reset_index(drop=True)


def finished_runs(store: str | Path, experiment: str) -> pd.DataFrame:
    """:func:`counted_runs` of the experiment's store."""
    return counted_runs(tracking.runs_frame(store, experiment))


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run × test condition; a column per test metric; per-run costs repeated on each row."""
    test_cols = [c for c in runs.columns if c.startswith("metrics.test/") and c.count("/") >= 2]
    if runs.empty or not test_cols:
        return pd.DataFrame(columns=RUN_KEYS + KNOWN_METRICS[:1] + list(COST_METRICS) + PROBE_COLUMNS
                            + list(REFERENCE_METRICS))
    base = pd.DataFrame({
        "run_id": runs["run_id"],
        "fusion": runs["tags.fb.fusion"],
        "dataset": runs["tags.fb.dataset"],
        "preset": runs.get("tags.fb.preset", pd.Series(index=runs.index, dtype=object)),
        "config_hash": runs["tags.fb.config_hash"],
        **{c: runs.get(f"tags.fb.{c}", pd.Series(index=runs.index, dtype=object)).fillna(d).replace("", d)
           for c, d in RUN_DEFAULTS.items()},
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
    refs = pd.DataFrame({"run_id": runs["run_id"], **{
        c: pd.to_numeric(runs.get(f"metrics.{m}", pd.Series(np.nan, index=runs.index)), errors="coerce")
        for c, m in REFERENCE_METRICS.items()}})
    table = table.merge(refs, on="run_id", how="left")
    table = table[RUN_KEYS + metrics + list(COST_METRICS) + PROBE_COLUMNS + list(REFERENCE_METRICS)]
    order = table["condition"].map(condition_order)
    return (table.assign(_o=order).sort_values(["dataset", "fusion", "preset", "config_hash", "_o", "seed"])
            .drop(columns="_o").reset_index(drop=True))


