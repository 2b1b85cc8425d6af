"""The papers' ablations from a store's runs (experiments/ablations.yaml): one row per study and setting, the test
top-1 mean and 95 % t-interval over seeds (``stats.summarize``) beside the model's forward GFLOPs, and their plot.

A run's setting is its effective model option: the override it logged (``params.model.<key>``) or, where it set none,
the constructor's default (MBT's ``fusion_layer=None`` resolved to 2·depth // 3). A default run therefore stands in
every study it belongs to (MBT at Lf = 2, B = 4 is a point of both MBT curves), as the paper's tables share their
default row.
"""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fusionbench.reports.stats import summarize


@dataclass(frozen=True)
class Study:
    name: str            # the plot panel and the csv's study column
    fusion: str
    vary: str            # the model option on the x axis
    fixed: dict[str, Any]  # the other options a run must have to belong (at their effective values)
    claim: str           # the paper's claim, as fusionbench tests it


STUDIES = (
    Study("mbt_fusion_layer", "mbt", "fusion_layer", {"num_bottlenecks": 4},
          "MBT: mid fusion beats early (Lf = 0) and late (Lf = depth)"),
    Study("vanilla_fusion_layer", "mid", "fusion_layer", {},
          "MBT: bottlenecks match or beat vanilla cross-attention at fewer GFLOPs"),
    Study("mbt_bottlenecks", "mbt", "num_bottlenecks", {"fusion_layer": 2},
          "MBT: flat in B from B = 4 on"),
    Study("deepavfusion_fusion_layers", "deepavfusion", "fusion_layers", {"fusion_block": "factorized"},
          "DeepAVFusion: fusion at every layer beats fusion in fewer"),
    Study("deepavfusion_fusion_block", "deepavfusion", "fusion_block", {"fusion_layers": "all"},
          "DeepAVFusion: factorized matches dense at a fraction of the cost"),
)
ORDER = {"fusion_layers": ["none", "0-2", "all"], "fusion_block": ["token", "dense", "factorized"]}


def effective_options(fusion: str, logged: dict[str, str], depth: int) -> dict[str, Any]:
    """The model options a run ran with: its logged overrides over the constructor's defaults."""
    from fusionbench.nn.towers import resolve_fusion_layer
    from fusionbench.registry import get_fusion

    params = inspect.signature(get_fusion(fusion).__init__).parameters
    options = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    options |= {k: _value(v) for k, v in logged.items()}
    if "fusion_layer" in options:
        options["fusion_layer"] = resolve_fusion_layer(options["fusion_layer"], depth)
    return options


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: 'all', 'none', 'token', '0-2'


def ablation_table(runs: pd.DataFrame, depth: int, metric: str = "test/av/top1") -> pd.DataFrame:
    """One row per (study, setting): n seeds, top-1 mean / CI in percent, forward GFLOPs (mean over the runs).

    ``runs``: ``tracking.runs_frame`` of the ablation experiment (finished runs only are counted)."""
    finished = runs[runs["status"] == "FINISHED"]
    rows = []
    for study in STUDIES:
        points: dict[Any, list[tuple[float, float]]] = {}
        for _, run in finished[finished["tags.fb.fusion"] == study.fusion].iterrows():
            logged = {c.removeprefix("params.model."): v for c, v in run.items()
                      if c.startswith("params.model.") and isinstance(v, str)}
            options = effective_options(study.fusion, logged, depth)
            if all(options.get(k) == v for k, v in study.fixed.items()):
                points.setdefault(options[study.vary], []).append(
                    (run[f"metrics.{metric}"], run["metrics.model/gflops"]))
        order = ORDER.get(study.vary)
        for setting in sorted(points, key=lambda s: order.index(s) if order and s in order else s):
            top1, gflops = zip(*points[setting])
            s = summarize(pd.Series(top1) * 100, bounds=(0.0, 100.0))
            rows.append({"study": study.name, "fusion": study.fusion, "option": study.vary, "setting": str(setting),
                         "n_seeds": s["n_seeds"], "top1": s["mean"], "ci95_low": s["ci95_low"],
                         "ci95_high": s["ci95_high"], "gflops": sum(gflops) / len(gflops)})
    return pd.DataFrame(rows, columns=["study", "fusion", "option", "setting", "n_seeds", "top1", "ci95_low",
                                       "ci95_high", "gflops"])


def plot_ablations(table: pd.DataFrame, path: Path) -> Path:
    """Four panels, top-1 with its 95 % interval (bars) and forward GFLOPs (grey, right axis): MBT Lf (bottleneck
    and vanilla), MBT B, DeepAVFusion fusion layers, DeepAVFusion fusion block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(["mbt_fusion_layer", "vanilla_fusion_layer"], "fusion layer Lf (0 = early, depth = late)"),
              (["mbt_bottlenecks"], "bottlenecks B (MBT, Lf = 2)"),
              (["deepavfusion_fusion_layers"], "DeepAVFusion fusion layers"),
              (["deepavfusion_fusion_block"], "DeepAVFusion fusion block")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True)
    for ax, (names, xlabel) in zip(axes, panels):
        cost = ax.twinx()
        for k, name in enumerate(names):
            sel = table[table["study"] == name]
            x = range(len(sel))
            shift = (k - (len(names) - 1) / 2) * 0.12
            err = [sel["top1"] - sel["ci95_low"], sel["ci95_high"] - sel["top1"]]
            label = {"mbt_fusion_layer": "bottleneck (mbt)", "vanilla_fusion_layer": "vanilla (mid)"}.get(name, None)
            ax.errorbar([i + shift for i in x], sel["top1"], yerr=err, fmt="o-", capsize=3, label=label)
            cost.plot(list(x), sel["gflops"], ls=":", marker="x", color="grey")
            ax.set_xticks(list(x), sel["setting"])
        cost.set_ylabel("forward GFLOPs per clip (grey)", color="grey")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(loc="lower left", fontsize=8)
    axes[0].set_ylabel("test top-1 (%), 95 % CI over seeds")
    fig.suptitle("The papers' ablations on synth-joint (small preset)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
