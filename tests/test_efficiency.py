"""FLOPs from FlopCounterMode (with the CPU SDPA formula registered) against an analytic count."""
import pytest
import torch
import torch.nn.functional as F

from fusionbench.evaluate.efficiency import count_params, forward_flops
from fusionbench.registry import PRESETS, create_model


def test_cpu_sdpa_is_counted():
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(1, 2, 10, 8)
    counter = FlopCounterMode(display=False)
    with counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * (2 * 2 * 10 * 10 * 8)  # QKᵀ and AV, 2 FLOPs per MAC


def test_late_fusion_flops_match_analytic_count():
    preset = PRESETS["tiny"]
    model = create_model("late", 10, "tiny")
    d, depth, hidden = preset.dim, preset.depth, int(preset.dim * preset.mlp_ratio)
    (m, f), (pm, pf) = preset.audio_shape, preset.audio_patch
    (t, h, w), (pt, ph, pw) = preset.video_shape, preset.video_patch
    n_a, n_v = 1 + (m // pm) * (f // pf), 1 + (t // pt) * (h // ph) * (w // pw)  # + CLS
    per_token = 4 * d * d + 2 * d * hidden  # q, kv (2), proj; MLP in and out
    attention = 2 * (n_a**2 + n_v**2) * d  # QKᵀ and AV per layer, both towers
    tokenizers = (n_a - 1) * (pm * pf) * d + (n_v - 1) * (3 * pt * ph * pw) * d
    heads = 2 * d * 10
    macs = depth * ((n_a + n_v) * per_token + attention) + tokenizers + heads
    assert forward_flops(model, preset.audio_shape, preset.video_shape) == 2 * macs
    assert count_params(model) == sum(p.numel() for p in model.parameters())
