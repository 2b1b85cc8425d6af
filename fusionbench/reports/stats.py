"""Seed statistics: mean, sample std and the 95 % t-interval (clipped to the metric's range)."""
from __future__ import annotations

import math

import pandas as pd

from fusionbench.reports.columns import _T975



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


def summarize(values: pd.Series, bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """mean, sample std (ddof=1), n, and the 95% t-interval mean ± t(0.975, n-1)·std/√n; NaN spread for n = 1.

    ``bounds`` (lo, hi): the range the metric lives in (a fraction in [0, 1] for top-1 / top-5 / mAP); the interval is
    clipped to it, so 98 ± 5 % over 3 seeds reads [93, 100] %, never 103 %. fusionbench's choice: a clipped t-interval
    (simple, and it says what the seeds allow) rather than a bounded-support interval such as Wilson's.
    """
    v = values.dropna().astype(float)
    n = len(v)
    mean = v.mean() if n else math.nan
    std = v.std(ddof=1) if n > 1 else math.nan
    half = t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    low, high = mean - half, mean + half
    if bounds is not None and n > 1:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "std": std, "n_seeds": n, "ci95_low": low, "ci95_high": high}
