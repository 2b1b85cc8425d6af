"""The leaderboard's historical import path: everything lives in :mod:`fusionbench.reports` (one idea per file).

``fusionbench.leaderboard.write_leaderboard`` and the column constants stay importable here (cli.py, tests, users).
"""
from __future__ import annotations

from fusionbench.reports.atomic import read_set, recover, write_set  # noqa: F401
from fusionbench.reports.columns import (  # noqa: F401
    BASELINE, BOUNDED_METRICS, CLEAN_CONDITIONS, COST_METRICS, CORRUPTION_KINDS, GROUP, KNOWN_METRICS,
    LEADERBOARD_COLUMNS, PROBE_COLUMNS, PROBE_METRICS, REFERENCE_METRICS, ROBUSTNESS_COLUMNS, RUN_KEYS,
    condition_kind, condition_order, severity,
)
from fusionbench.reports.markdown import dataset_markdown, entry_table  # noqa: F401
from fusionbench.reports.plots import FUSION_COLOURS, pareto_plot, robustness_plot  # noqa: F401
from fusionbench.reports.probe import probe_markdown, probe_table  # noqa: F401
from fusionbench.reports.robustness import robustness_table  # noqa: F401
from fusionbench.reports.runs import counted_runs, diverged_runs, finished_runs, runs_table  # noqa: F401
from fusionbench.reports.stats import summarize, t975  # noqa: F401
from fusionbench.reports.tables import headline_metric, leaderboard_table  # noqa: F401
from fusionbench.reports.write import write_leaderboard  # noqa: F401
