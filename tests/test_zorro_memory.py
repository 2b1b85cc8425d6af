"""Zorro's structured path holds no more memory than the dense masked one in a training step: the attention core and a
lone attention layer (``routed_sdpa`` makes F's call first and splits k, v after it) and the whole model (one masked
readout call). The steps and the measurement are ``benchmarks/perf.py``'s (``CASES``, ``peak_mib``), the ones its
README figures come from; the bytes are torch's own CPU allocations, counted exactly by the profiler
(``evaluate/allocated.py``), so the rule is a test."""
import importlib.util
from pathlib import Path

import pytest
import torch

from fusionbench.evaluate.allocated import allocated_peak_mib

_spec = importlib.util.spec_from_file_location("perf", Path(__file__).resolve().parents[1] / "benchmarks" / "perf.py")
perf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perf)


@pytest.mark.parametrize("case, n, width, batch", [
    ("zorro_sdpa", 128, 128, 4),  # 0.89× the masked peak; with F's call after the split or last: 1.02×
    ("zorro_attn", 128, 128, 4),  # 0.94×; with F's call last: 1.01×
    ("zorro_model", 64, 128, 8),  # 0.99×; with the four readout queries routed: 1.02×
], ids=["core", "layer", "model"])
def test_the_structured_training_step_peaks_no_higher_than_the_masked_one(case, n, width, batch):
    structured, masked = (perf.peak_mib(case, path, n, width, batch, {}) for path in ("structured", "masked"))
    assert 0 < structured <= masked, (structured, masked)


def test_the_count_is_the_bytes_held_at_the_highest_point():
    torch.manual_seed(0)
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    result = 256 * 256 * 4 / 2**20  # MiB of one product
    assert allocated_peak_mib(lambda: (a @ b).sum()) == pytest.approx(result, rel=0.01)  # freed before the end
    kept = []
    assert allocated_peak_mib(lambda: kept.extend([a @ b, a @ b])) == pytest.approx(2 * result, rel=0.01)
