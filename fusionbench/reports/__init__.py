"""Reports: runs table → leaderboard tables → markdown → plots → robustness, written atomically as one set.

One idea per file: ``columns`` (the CSV contract, condition names), ``stats`` (seed means, clipped t-intervals),
``runs`` (which MLflow runs count, diverged runs apart; runs.csv), ``tables`` (leaderboard.csv), ``probe`` (the leak
probe), ``robustness`` (robustness.csv), ``markdown`` (leaderboard.md), ``plots`` (PNG figures), ``atomic`` (the
set writer, stdlib only), ``write`` (the entry, :func:`write_leaderboard`).
"""
from __future__ import annotations

from typing import Any

__all__ = ["write_leaderboard"]


def __getattr__(name: str) -> Any:  # lazy: ``reports.atomic`` alone imports no pandas / matplotlib / MLflow
    if name == "write_leaderboard":
        from fusionbench.reports.write import write_leaderboard

        return write_leaderboard
    raise AttributeError(name)
