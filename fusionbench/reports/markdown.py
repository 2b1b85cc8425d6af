"""leaderboard.csv → leaderboard.md: one section per dataset, its table, the robustness table, notes."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fusionbench.reports.columns import BOUNDED_METRICS, GROUP, RUN_DEFAULTS, condition_order
from fusionbench.reports.fmt import _fmt_count, _fmt_gflops, _fmt_rate, _pct
from fusionbench.reports.robustness import SAME_SCORE as DEGENERATE_ATOL
from fusionbench.reports.robustness import reference_rate


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
    """Row label per entry: the fusion name with its protocol and weights where they are not the default
    (``zorro [linear_probe, pretrain:1a2b3c4d]``), plus preset and hash only where needed to tell entries apart."""
    base = entries["fusion"].astype(str)
    if not entries.empty:
        base = base + entries.apply(_provenance, axis=1)
    labels = base
    if labels.duplicated(keep=False).any():
        with_preset = base + " (" + entries["preset"].astype(str) + ")"
        labels = labels.where(~labels.duplicated(keep=False), with_preset)
        if labels.duplicated(keep=False).any():
            full = base + " (" + entries["preset"].astype(str) + ", " + entries["config_hash"] + ")"
            labels = labels.where(~labels.duplicated(keep=False), full)
    return labels


def _provenance(entry: pd.Series) -> str:
    parts = [str(entry.get(c)) for c, default in RUN_DEFAULTS.items() if str(entry.get(c, default)) != default]
    parts = [p[:len("pretrain:") + 8] if p.startswith("pretrain:") else p for p in parts]  # a run id's first 8
    return f" [{', '.join(parts)}]" if parts else ""


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


CELL_RULES = (
    "Every score is in percent (runs.csv and leaderboard.csv keep fractions in [0, 1]). Cells: mean ± half-width of "
    "the 95% t-interval over seeds (no ± with one seed); where the interval reaches past 0 or 100 % it is clipped "
    "and shown as its bounds, `mean [low, high]`. **Bold**: the best mean of a column, only where its interval lies "
    "entirely above the runner-up's (a tie, overlapping intervals or a single-seed cell on either side: no bold). "
    "`(n=k)` marks a cell with fewer seeds than its row. The _chance_ and _majority class_ rows are what a model that "
    "learnt nothing scores: 1/C, and always naming the test split's most frequent class."
)


def _cell(r: pd.Series, percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    mean = r["mean"] * scale
    text = f"{mean:.1f}" if percent else f"{mean:.3g}"
    if r["n_seeds"] > 1 and np.isfinite(r["ci95_low"]):
        low, high = r["ci95_low"] * scale, r["ci95_high"] * scale
        half = (high - low) / 2
        symmetric = math.isclose(high - mean, mean - low, rel_tol=1e-6, abs_tol=1e-9)
        if percent and not symmetric:  # clipped at 0 or 100 %
            text += f" [{low:.1f}, {high:.1f}]"
        else:
            text += f" ± {half:.1f}" if percent else f" ± {half:.2g}"
    return text


def best_untied(rows: pd.DataFrame) -> int | None:
    """Index of the row to bold in one column: the best mean, if its 95 % CI lies entirely above the runner-up's.

    No bold with one entry (nothing to beat), a tie, or a single-seed best or runner-up (no interval to compare)."""
    if len(rows) < 2:
        return None
    ranked = rows.sort_values("mean", ascending=False, kind="stable")
    best, runner = ranked.iloc[0], ranked.iloc[1]
    if best["n_seeds"] < 2 or runner["n_seeds"] < 2 or not best["mean"] > runner["mean"]:
        return None
    return ranked.index[0] if best["ci95_low"] > runner["ci95_high"] else None


def degenerate_lines(table: pd.DataFrame, dataset: str, metric: str, conditions: list[str],
                     majority: float) -> list[str]:
    """A note per condition where every run (each entry and seed, at least 2) scores the same value."""
    if table is None or metric not in table:
        return []
    sel = table[(table["dataset"] == dataset)].dropna(subset=[metric])
    same: dict[float, list[str]] = {}
    for cond in conditions:
        values = sel.loc[sel["condition"] == cond, metric].to_numpy(float)
        if len(values) >= 2 and np.ptp(values) <= DEGENERATE_ATOL:
            same.setdefault(round(float(values.mean()), 6), []).append(cond)
    lines = []
    for value, conds in same.items():
        n = sel.loc[sel["condition"].isin(conds), "run_id"].nunique()
        what = f"{', '.join(f'`{c}`' for c in conds)}: every one of the {n} runs scores {_pct(value)}"
        what += " in each" if len(conds) > 1 else ""
        if np.isfinite(majority) and abs(value - majority) <= DEGENERATE_ATOL and metric in ("top1",):
            what += (" — the share of the test split's most frequent class: the models name that one class "
                     "whatever the input, so this measures nothing about fusion")
            if all(c.startswith("video_") for c in conds):
                what += " (they ignore the corrupted video and fall back to one class)"
        else:
            what += " — a degenerate column: it does not rank the fusions"
        lines.append(f"> ⚠ Degenerate: {what}.")
    return [*lines, ""] if lines else []


def dataset_markdown(board: pd.DataFrame, dataset: str, metric: str, entries: pd.DataFrame,
                     probe: list[str] | None = None, table: pd.DataFrame | None = None) -> list[str]:
    """The dataset's section: heading, ``probe`` lines (see :func:`probe_markdown`), the results table in percent,
    chance / majority-class rows, and a warning under it for each degenerate column (:func:`degenerate_lines`)."""
    sel = board[(board["dataset"] == dataset) & (board["metric"] == metric)]
    conditions = sorted(sel["condition"].unique(), key=condition_order)
    percent = metric in BOUNDED_METRICS
    bold = {cond: best_untied(sel[sel["condition"] == cond]) for cond in conditions}
    header = ["fusion", "seeds", *conditions, "params", "GFLOPs", "train clips/s", "peak MiB"]
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join(['---'] + ['--:'] * (len(header) - 1))}|"]
    for _, entry in entries.iterrows():
        mine = sel.reset_index().merge(entry[GROUP].to_frame().T, on=GROUP).set_index("index")
        n_row = int(mine["n_seeds"].max())
        cells = []
        for cond in conditions:
            hit = mine[mine["condition"] == cond]
            if hit.empty:
                cells.append("–")
                continue
            r = hit.iloc[0]
            text = _cell(r, percent)
            if bold[cond] == hit.index[0]:
                text = f"**{text}**"
            if r["n_seeds"] != n_row:
                text += f" (n={int(r['n_seeds'])})"
            cells.append(text)
        first = mine.iloc[0]
        lines.append(f"| {entry['label']} | {n_row} | {' | '.join(cells)} | {_fmt_count(first['params'])} | "
                     f"{_fmt_gflops(first['gflops'])} | {_fmt_rate(first['train_clips_s'])} | "
                     f"{_fmt_rate(first['peak_mem_mb'])} |")
    refs = {c: sel[c].dropna().mean() if c in sel and sel[c].notna().any() else math.nan
            for c in ("chance", "majority")}
    ref_note = []
    if metric == "top1":
        for column, label in (("chance", "_chance (1/C)_"), ("majority", "_majority class_")):
            if np.isfinite(refs[column]):
                value = f"{100 * refs[column]:.1f}"
                lines.append(f"| {label} | | {' | '.join([value] * len(conditions))} | | |")
        if not all(np.isfinite(v) for v in refs.values()):
            ref_note = ["Chance and the majority-class rate were not recorded by these runs (`data/chance`, "
                        "`data/majority_test`): robustness is not checked against them.", ""]
    unit = f"{metric} (%)" if percent else metric
    under = degenerate_lines(table, dataset, metric, conditions, refs["majority"])
    return [f"## {dataset}", "", *(probe or []), f"Headline metric: **{unit}** on the test split.", "", *lines, "",
            *under, *ref_note]


def diverged_markdown(diverged: pd.DataFrame) -> list[str]:
    """The "Diverged runs" section: one row per run whose loss became NaN/inf, never ranked in the tables."""
    if diverged.empty:
        return []
    lines = ["## Diverged runs", "",
             f"{len(diverged)} run(s) stopped because their training or validation loss became NaN or inf "
             "(`fb.status=diverged`, MLflow status FAILED). They are not in any table above and count in no mean.", "",
             "| fusion | dataset | preset | seed | config | reason (`fb.error`) | run |",
             "|---|---|---|--:|---|---|---|"]
    for _, r in diverged.iterrows():
        reason = str(r["error"]).replace("|", "\\|").replace("\n", " ") or "–"
        lines.append(f"| {r['fusion']} | {r['dataset']} | {r['preset']} | {r['seed']} | {r['config_hash']} | "
                     f"{reason} | `{r['run_id']}` |")
    return [*lines, ""]


def _fmt_rob(value: float, na: bool = False, signed: bool = False) -> str:
    if na:
        return "n/a"
    if not np.isfinite(value):
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def robust_lines(rob: pd.DataFrame, entries: pd.DataFrame) -> list[str]:
    """The robustness table in percent; relative AUC and effective robustness n/a where clean is not above chance
    and the majority-class rate (see ``robustness.learnt``)."""
    order = entries.reset_index().rename(columns={"label": "entry", "index": "_o"})
    frame = rob.merge(order, on=GROUP, how="left").sort_values(["_o", "kind"], kind="stable")
    cols = ["entry", "kind", "levels", "clean (%)", "AUC (%)", "relative AUC (%)", "effective robustness (points)",
            "n_seeds"]
    lines = [f"| {' | '.join(cols)} |", f"|{'|'.join(['---'] * 3 + ['--:'] * (len(cols) - 3))}|"]
    for _, r in frame.iterrows():
        na = bool(np.isfinite(reference_rate(r.to_frame().T)) and not np.isfinite(r["relative_auc"]))
        vals = [r["entry"], r["kind"], r["levels"].replace(";", ", "), _fmt_rob(r["clean"]), _fmt_rob(r["auc"]),
                _fmt_rob(r["relative_auc"], na), _fmt_rob(r["effective_robustness"], na, signed=True),
                str(r["n_seeds"])]
        lines.append(f"| {' | '.join(vals)} |")
    return [*lines, "", "n/a: the clean score is not above chance and the majority-class rate (its 95 % CI, or its "
            "mean with one seed), so losing nothing under corruption says nothing: no robustness is claimed. "
            "–: late fusion, the baseline of effective robustness, was not run or is itself not above them."]
