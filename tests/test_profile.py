"""``fusionbench profile``: FLOP counts pinned to analytic counts (forward and backward), the mask-effective count,
and the command end to end."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fusionbench.evaluate.profile import CSV_COLUMNS, count_flops, run_profiles
from fusionbench.nn.block import Block
from fusionbench.registry import PRESETS, create_model


def _block_forward_flops(n: int, d: int, hidden: int, batch: int) -> int:
    projections = 4 * n * d * d + 2 * n * d * hidden  # q, kv (2), proj; MLP in and out (MACs)
    attention = 2 * n * n * d  # QKᵀ and AV (MACs, all heads)
    return 2 * batch * (projections + attention)


@pytest.mark.parametrize("backward", [False, True])
def test_one_attention_block_matches_the_analytic_count(backward: bool) -> None:
    batch, n, d, heads, ratio = 2, 12, 16, 2, 2.0
    block = Block(d, heads, ratio)
    x = torch.randn(batch, n, d, requires_grad=backward)
    counter = FlopCounterMode(display=False)
    with counter:
        y = block(x)
        if backward:
            y.sum().backward()
    forward = _block_forward_flops(n, d, int(d * ratio), batch)
    attention = 2 * batch * 2 * n * n * d
    # backward: each projection twice (grad of the input and of the weight); attention 5 matmuls for its 2 (dV, dP,
    # the recomputed QKᵀ, dQ, dK: torch's sdpa backward formula)
    assert counter.get_total_flops() == (3 * forward + attention // 2 if backward else forward)


def _late_counts(num_classes: int) -> tuple[int, int, int]:
    p = PRESETS["tiny"]
    d, hidden = p.dim, int(p.dim * p.mlp_ratio)
    (m, f), (pm, pf) = p.audio_shape, p.audio_patch
    (t, h, w), (pt, ph, pw) = p.video_shape, p.video_patch
    n_a, n_v = 1 + (m // pm) * (f // pf), 1 + (t // pt) * (h // ph) * (w // pw)  # + CLS
    blocks = p.depth * (_block_forward_flops(n_a, d, hidden, 1) + _block_forward_flops(n_v, d, hidden, 1))
    tokenizers = 2 * ((n_a - 1) * pm * pf * d + (n_v - 1) * 3 * pt * ph * pw * d)
    heads = 2 * 2 * d * num_classes  # the shared head on each CLS
    attention = p.depth * 2 * 2 * (n_a**2 + n_v**2) * d
    return blocks + tokenizers + heads, tokenizers, attention


def test_whole_tiny_model_forward_and_backward_match_the_analytic_count() -> None:
    model = create_model("late", 10, "tiny")
    forward, tokenizers, attention = _late_counts(10)
    assert count_flops(model, backward=False) == forward
    # backward: 2× every matmul, except the patch projections, whose input (the data) needs no gradient (1×), and
    # attention (2.5×: see the block test)
    assert count_flops(model, backward=True) == 3 * forward - tokenizers + attention // 2
    assert count_flops(model, backward=False, dense=True, effective=True) == forward  # no masks: nothing discarded


def test_zorro_effective_flops_are_the_dense_count_less_the_masked_pairs() -> None:
    model = create_model("zorro", 10, "tiny")
    d, depth = model.dim, model.depth
    n_a, n_v, n_f = model.num_audio_tokens, model.num_video_tokens, model.fusion_tokens.shape[1]
    # Zorro: A reads A, V reads V, F reads all; readout queries: audio → A, video → V, fusion → F, global → all
    pairs = depth * (n_a * (n_v + n_f) + n_v * (n_a + n_f)) + (n_v + n_f) + (n_a + n_f) + (n_a + n_v)
    dense = count_flops(model, backward=False, dense=True)
    assert count_flops(model, backward=False, dense=True, effective=True) == dense - 4 * d * pairs
    dense_bwd = count_flops(model, backward=True, dense=True)
    assert count_flops(model, backward=True, dense=True, effective=True) == dense_bwd - 14 * d * pairs  # 3.5 × forward
    assert dense > 0 and count_flops(model, backward=False) > 0  # the structured path is counted too


def test_profile_command_writes_every_column(tmp_path) -> None:
    out = tmp_path / "profile.csv"
    lines = []
    profiles = run_profiles(["fusion=mbt", "preset=tiny"], batch=2, warmup=1, steps=1, out=out, log=lines.append)
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(CSV_COLUMNS) and len(frame) == 1 and frame.fusion[0] == "mbt"
    row = frame.iloc[0]
    assert row.params == sum(p.numel() for p in create_model("mbt", 10, "tiny").parameters())
    for key in ("gflops_fwd", "gflops_fwd_bwd", "train_clips_s", "infer_clips_s", "matmul_gflops_s", "mfu"):
        assert row[key] > 0, key
    assert row.gflops_fwd_bwd > 2 * row.gflops_fwd
    assert profiles[0].fusion == "mbt" and any("matmul" in line for line in lines)
