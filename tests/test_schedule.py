import pytest

from fusionbench.tasks.classify import warmup_cosine


def test_warmup_then_cosine_to_zero():
    total, warmup = 100, 10
    values = [warmup_cosine(s, total, warmup) for s in range(total + 1)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # monotone decay after warm-up
    assert values[55] == pytest.approx(0.5, abs=1e-9) and values[100] == pytest.approx(0.0, abs=1e-12)
