"""Pareto (accuracy vs GFLOPs) and robustness (accuracy vs corruption level) figures, rendered to PNG bytes.

Every figure uses the same colour for a fusion (``FUSION_COLOURS``, from the registry's sorted list), a legend rather
than point labels (labels of nearby points overlapped), percent on every score axis with one y-range (0–100 %) for
panels of the same metric, and dashed lines at chance and at the majority-class rate where the runs logged them.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from fusionbench.reports.columns import (BOUNDED_METRICS, CORRUPTION_KINDS, COST_METRICS, GROUP, PARETO_X,
                                         condition_kind, severity)


def _fusion_colours() -> dict[str, str]:
    from matplotlib import colormaps

    from fusionbench.registry import list_fusions

    palette = colormaps["tab10"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(list_fusions())}


FUSION_COLOURS: dict[str, tuple] = _fusion_colours()  # one colour per registered fusion, in every figure
_OTHER = ("#7f7f7f", "#bcbd22", "#17becf", "#8c564b")  # unregistered names: grey family, by name
_MARKERS = ("o", "s", "^", "D", "v", "P")  # entries of one fusion at several presets / configs


def fusion_colour(fusion: str) -> tuple | str:
    return FUSION_COLOURS.get(fusion, _OTHER[sum(map(ord, fusion)) % len(_OTHER)])


def _styles(entries: pd.DataFrame) -> list[dict]:
    """Per entry: its fusion's colour, and a marker that tells several entries of one fusion apart."""
    seen: dict[str, int] = {}
    styles = []
    for fusion in entries["fusion"]:
        k = seen.get(fusion, 0)
        seen[fusion] = k + 1
        styles.append({"color": fusion_colour(fusion), "marker": _MARKERS[k % len(_MARKERS)]})
    return styles


def _scale(metric: str) -> float:
    return 100.0 if metric in BOUNDED_METRICS else 1.0


def _axis_label(metric: str, where: str) -> str:
    return f"test {metric} {where}(%)" if metric in BOUNDED_METRICS else f"test {metric} {where}".rstrip()


def _references(sel: pd.DataFrame) -> dict[str, float]:
    """{"chance": …, "majority": …} of the dataset's rows, those that were logged."""
    out = {}
    for column in ("chance", "majority"):
        values = sel[column].dropna() if column in sel else pd.Series(dtype=float)
        if len(values):
            out[column] = float(values.mean())
    return out


def _draw_references(ax, refs: dict[str, float], scale: float) -> None:
    if "chance" in refs:
        ax.axhline(refs["chance"] * scale, color="0.35", ls="--", lw=1, label=f"chance ({refs['chance'] * 100:.1f} %)")
    if "majority" in refs and not math.isclose(refs["majority"], refs.get("chance", -1), abs_tol=1e-9):
        ax.axhline(refs["majority"] * scale, color="0.35", ls=":", lw=1.2,
                   label=f"majority class ({refs['majority'] * 100:.1f} %)")


def _yrange(ax, metric: str) -> None:
    if metric in BOUNDED_METRICS:
        ax.set_ylim(-3, 103)


def _errors(mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(2, n) asymmetric error bars of the (clipped) CIs; 0 where there is no interval (one seed)."""
    return np.nan_to_num(np.vstack([mean - low, high - mean]))


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(board: pd.DataFrame, dataset: str, metric: str, entries: pd.DataFrame,
                x_column: str = "gflops") -> bytes | str:
    """:func:`pareto_figure` as PNG bytes, or the note why there is none."""
    fig = pareto_figure(board, dataset, metric, entries, x_column)
    return fig if isinstance(fig, str) else _png(fig)


def robustness_plot(board: pd.DataFrame, dataset: str, metric: str, entries: pd.DataFrame) -> bytes | str:
    """:func:`robustness_figure` as PNG bytes, or the note why there is none."""
    fig = robustness_figure(board, dataset, metric, entries)
    return fig if isinstance(fig, str) else _png(fig)


def pareto_figure(board: pd.DataFrame, dataset: str, metric: str, entries: pd.DataFrame, x_column: str = "gflops"):
    """Score on ``av`` vs a cost (``x_column``, one of ``PARETO_X``: GFLOPs by default) with 95 % CI bars and the
    Pareto front (a matplotlib Figure), or a note why not. For a rate (clips/s) higher is cheaper: the front runs
    the other way."""
    if x_column not in PARETO_X:
        raise ValueError(f"pareto x-axis {x_column!r} is not one of {', '.join(PARETO_X)}")
    sel = board[(board["dataset"] == dataset) & (board["metric"] == metric) & (board["condition"] == "av")]
    sel = sel[np.isfinite(sel[x_column].astype(float))] if len(sel) else sel
    if sel.empty:
        metric_name = COST_METRICS.get(x_column, x_column)
        return f"{dataset}: no Pareto plot (no run logged `{metric_name}` together with `test/av/{metric}`)."
    plt = _pyplot()
    scale = _scale(metric)
    sel = sel.merge(entries.reset_index().rename(columns={"index": "_o"}), on=GROUP, how="left")
    sel = sel.sort_values("_o").reset_index(drop=True)
    x, y = sel[x_column].to_numpy(float), sel["mean"].to_numpy(float) * scale
    cheaper_up = x_column == "train_clips_s"  # a rate: more is cheaper
    xs = -x if cheaper_up else x
    err = _errors(y, sel["ci95_low"].to_numpy(float) * scale, sel["ci95_high"].to_numpy(float) * scale)
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for i, style in enumerate(_styles(sel)):
        ax.errorbar(x[i], y[i], yerr=err[:, i : i + 1], fmt=style["marker"], color=style["color"], capsize=3,
                    ms=7, label=sel["label"].iloc[i])
    order = np.lexsort((-y, xs))
    front, top = [], -np.inf
    for i in order:
        if y[i] > top:
            front.append(i)
            top = y[i]
    ax.step(x[front], y[front], where="post", color="black", alpha=0.35, lw=1, label="Pareto front")
    _draw_references(ax, _references(sel), scale)
    if x.min() > 0 and x.max() / x.min() > 20:
        ax.set_xscale("log")
    _yrange(ax, metric)
    ax.set_xlabel(PARETO_X[x_column])
    ax.set_ylabel(_axis_label(metric, "on av, mean ± 95% CI "))
    ax.set_title(f"{dataset}: accuracy vs {'compute' if x_column == 'gflops' else x_column}")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def robustness_figure(board: pd.DataFrame, dataset: str, metric: str, entries: pd.DataFrame):
    """Score vs corruption level, one panel per kind (one shared y-range), clean ``av`` as each curve's
    uncorrupted end (a matplotlib Figure), or a note why there is none."""
    sel = board[(board["dataset"] == dataset) & (board["metric"] == metric)]
    kinds = [k for k in CORRUPTION_KINDS if sel["condition"].map(lambda c: condition_kind(c)[0] == k).any()]
    if not kinds:
        return f"{dataset}: no robustness plot (no corrupted eval conditions were logged)."
    plt = _pyplot()
    scale = _scale(metric)
    refs = _references(sel)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds) + 1.8, 3.9), squeeze=False, sharey=True)
    styles = _styles(entries)
    for ax, kind in zip(axes[0], kinds):
        levels = sorted({condition_kind(c)[1] for c in sel["condition"] if condition_kind(c)[0] == kind})
        gap = max(np.diff(levels).max() if len(levels) > 1 else 5.0, 1.0)
        clean_x = max(levels) + gap if kind == "audio_snr" else 0.0  # SNR: "clean" drawn one step above the best
        for (_, entry), style in zip(entries.iterrows(), styles):
            mine = sel.merge(entry[GROUP].to_frame().T, on=GROUP)
            rows = zip(mine["condition"], mine["mean"], mine["ci95_low"], mine["ci95_high"])
            pts = [(condition_kind(c)[1], m, lo, hi) for c, m, lo, hi in rows if condition_kind(c)[0] == kind]
            clean = mine[mine["condition"] == "av"]
            if len(clean):
                c = clean.iloc[0]
                pts.append((clean_x, c["mean"], c["ci95_low"], c["ci95_high"]))
            pts.sort(key=lambda p: severity(kind, p[0]) if p[0] != clean_x or kind != "audio_snr" else -np.inf)
            xs, ys, lo, hi = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(xs, ys * scale, yerr=_errors(ys * scale, lo * scale, hi * scale), marker=style["marker"],
                        color=style["color"], capsize=2, label=entry["label"])
        _draw_references(ax, refs, scale)
        if kind == "audio_snr":
            ax.invert_xaxis()
            ax.set_xticks([clean_x, *levels], ["clean", *(f"{v:g}" for v in levels)])
            ax.set_xlabel("audio SNR (dB)")
        else:
            axis = {"video_noise": "pixel noise σ", "video_occlusion": "occluded fraction (mean fill)",
                    "video_occlusion_black": "occluded fraction (black)"}[kind]
            ax.set_xlabel(f"{axis}; 0 = clean")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
    _yrange(axes[0][0], metric)
    axes[0][0].set_ylabel(_axis_label(metric, ""))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{dataset}: robustness (mean ± 95% CI over seeds)")
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (4.2 * len(kinds) + 1.8), 1))
    return fig
