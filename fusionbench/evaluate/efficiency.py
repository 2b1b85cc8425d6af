"""Cost of a model: parameters and forward FLOPs per clip, counted by ``torch.utils.flop_counter.FlopCounterMode``.

On CPU, ``F.scaled_dot_product_attention`` dispatches to ``aten._scaled_dot_product_flash_attention_for_cpu``, which has
no FLOP formula in torch (counted as 0); the standard SDPA formulas are registered for it here. A masked dense
attention is counted at its full N² cost (what runs); structured attention is counted at what it computes.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _register_cpu_sdpa() -> None:
    op = aten._scaled_dot_product_flash_attention_for_cpu
    from torch.utils.flop_counter import flop_registry

    if op in flop_registry:
        return

    @register_flop_formula(op)
    def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_sdpa()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def forward_flops(model: nn.Module, audio_shape: tuple[int, int], video_shape: tuple[int, int, int]) -> int:
    """FLOPs of one forward pass on one audio-visual clip (batch 1, eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    audio = torch.zeros(1, 1, *audio_shape, device=device)
    video = torch.zeros(1, 3, *video_shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(audio=audio, video=video)
    model.train(was_training)
    return int(counter.get_total_flops())
