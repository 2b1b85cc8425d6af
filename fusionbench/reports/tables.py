"""runs.csv → leaderboard.csv: one row per entry × condition × metric (mean, std, n_seeds, 95 % CI)."""
from __future__ import annotations

import pandas as pd

from fusionbench.reports.columns import (BOUNDED_METRICS, COST_METRICS, ENTRY_COST, GROUP, LEADERBOARD_COLUMNS, PROBE_COLUMNS,
                                      PROBE_METRICS, REFERENCE_METRICS, RUN_KEYS, condition_order)
from fusionbench.reports.probe import _union_leak
from fusionbench.reports.stats import summarize



def leaderboard_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per fusion × dataset × preset × config hash × condition × metric: mean, std, n_seeds, 95% CI."""
    metrics = [c for c in table.columns if c not in RUN_KEYS and c not in COST_METRICS and c not in PROBE_COLUMNS
               and c not in REFERENCE_METRICS]
    if table.empty or not metrics:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    long = table.melt(id_vars=[*GROUP, "condition", "seed", *ENTRY_COST], value_vars=metrics,
                      var_name="metric", value_name="value").dropna(subset=["value"])
    rows = []
    for key, group in long.groupby([*GROUP, "condition", "metric"], sort=False, dropna=False):
        row = dict(zip([*GROUP, "condition", "metric"], key))
        row.update(summarize(group["value"], (0.0, 1.0) if key[-1] in BOUNDED_METRICS else None))
        row.update({c: group[c].mean() for c in ENTRY_COST})
        rows.append(row)
    board = pd.DataFrame(rows)
    if set(PROBE_COLUMNS) <= set(table.columns):  # the entry's probe: one per run, whatever the conditions
        per_run = table.drop_duplicates("run_id")
        probe = per_run.groupby(GROUP, sort=False, dropna=False).agg(
            **{c: (c, "mean") for c in PROBE_METRICS}, leak_probe_leak=("leak_probe_leak", _union_leak))
        board = board.merge(probe.reset_index(), on=GROUP, how="left")
    if set(REFERENCE_METRICS) <= set(table.columns):  # chance / majority of the entry's runs (equal across seeds)
        per_run = table.drop_duplicates("run_id")
        refs = per_run.groupby(GROUP, sort=False, dropna=False)[["chance", "majority"]].mean()
        board = board.merge(refs.reset_index(), on=GROUP, how="left")
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


