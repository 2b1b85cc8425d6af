"""The leak probe of a run's synthetic set: its runs.csv columns and its markdown lines."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fusionbench.reports.columns import PROBE_METRICS, PROBE_MODALITIES, PROBE_TOLERANCE
from fusionbench.reports.fmt import _pct



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


