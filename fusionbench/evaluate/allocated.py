"""The exact peak of the bytes torch allocates on the CPU while a callable runs.

The profiler records every allocation and free of torch's CPU allocator; its memory timeline (``[times, sizes by
category]``) summed over categories is the bytes held at each event, and the peak above the first point is the
callable's own. Unlike the peak RSS growth (``profile.PeakMemory``), it does not depend on what the process's heap
already had free, on page touching or on the OS: the same code gives the same bytes on every machine at a given
thread count, so a memory rule can be a test. Python objects and the allocator's own overhead are not counted.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from torch.profiler import ProfilerActivity, profile


def allocated_peak_mib(step: Callable[[], object]) -> float:
    """MiB above the starting point at the highest point of torch's CPU allocations during ``step()``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the timeline export is deprecated for CUDA's snapshots
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())  # sizes: per event, the bytes held per category
    held = [sum(by_category) for by_category in sizes]
    return (max(held) - held[0]) / 2**20 if held else 0.0
