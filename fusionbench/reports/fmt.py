"""Number formats shared by the markdown tables and the plots' file names: every score is shown in percent."""
from __future__ import annotations

import re

import numpy as np


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _fmt_count(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x / 1e6:.2f} M" if x >= 1e5 else f"{x / 1e3:.1f} k"


def _fmt_gflops(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:.3g}"


def _fmt_rate(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
