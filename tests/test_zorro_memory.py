"""Zorro's structured path holds no more memory than the dense masked one in a training step: the attention core and a
lone attention layer (``routed_sdpa`` makes F's call first and splits k, v after it) and the whole model (one masked
readout call). The bytes are torch's own CPU allocations, counted exactly by the profiler (``evaluate/allocated.py``),
so the rule is a test."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.evaluate.allocated import allocated_peak_mib
from fusionbench.fusions.zorro import routed_attention, routed_sdpa, zorro_mask
from fusionbench.nn.block import Attention
from fusionbench.nn.masks import TokenType, token_types
from fusionbench.registry import create_model


def core_step(path: str, n: int, width: int, batch: int):
    """A training step of the attention core alone: q, k, v (B, 4, N, d_h) given, over [A (n) | V (n) | F (16)]."""
    torch.manual_seed(0)
    sizes = {TokenType.AUDIO: n, TokenType.VIDEO: n, TokenType.FUSION: 16}
    q, k, v = (torch.randn(batch, 4, sum(sizes.values()), width // 4, requires_grad=True) for _ in range(3))
    types = token_types(*sizes.items())
    mask = zorro_mask(types, types)  # (N, N)

    def run() -> torch.Tensor:  # (B, 4, N, d_h)
        if path == "structured":
            return torch.cat(list(routed_sdpa(q, k, v, sizes).values()), dim=2)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def step() -> None:
        run().sum().backward()  # the output is not held through the backward (neither path needs it)
        q.grad = k.grad = v.grad = None  # each step makes its gradients, as zero_grad(set_to_none) leaves them
    return step


def layer_step(path: str, n: int, width: int, batch: int):
    """A training step of one attention layer (LayerNorm, projections, attention) over [A (n) | V (n) | F (16)]."""
    torch.manual_seed(0)
    sizes = {TokenType.AUDIO: n, TokenType.VIDEO: n, TokenType.FUSION: 16}
    x = torch.randn(batch, sum(sizes.values()), width, requires_grad=True)  # (B, N, D)
    types = token_types(*sizes.items())
    mask = zorro_mask(types, types)  # (N, N)
    norm, attn = nn.LayerNorm(width), Attention(width, 4)

    def run() -> torch.Tensor:  # (B, N, D)
        return routed_attention(attn, norm(x), sizes) if path == "structured" else attn(norm(x), mask=mask)

    def step() -> None:
        run().sum().backward()
        for t in (x, *norm.parameters(), *attn.parameters()):
            t.grad = None  # each step makes its gradients, as zero_grad(set_to_none) leaves them
    return step


def model_step(path: str, n: int, width: int, batch: int):
    """A training step of the small-depth Zorro at n audio and n video tokens, by ``forward_<path>``."""
    torch.manual_seed(0)
    model = create_model("zorro", 10, "small", dim=width, heads=4, audio_shape=(8, 2 * n), audio_patch=(8, 2),
                         video_shape=(n, 4, 4), video_patch=(1, 4, 4)).train()
    audio, video = torch.randn(batch, 1, 8, 2 * n), torch.randn(batch, 3, n, 4, 4)
    target = torch.randint(10, (batch,))
    forward = getattr(model, f"forward_{path}")

    def step() -> None:
        model.loss(forward(audio=audio, video=video), target, F.cross_entropy).backward()
        model.zero_grad(set_to_none=True)
    return step


def peak(make_step, path: str, *geometry: int) -> float:
    torch.set_num_threads(1)  # the attention kernel's buffers are per thread
    step = make_step(path, *geometry)
    step()  # warm: one-off allocations are not the step's
    return allocated_peak_mib(step)


@pytest.mark.parametrize("make_step, geometry", [
    (core_step, (128, 128, 4)),  # 0.89× the masked peak; with F's call after the split or last: 1.02×
    (layer_step, (128, 128, 4)),  # 0.94×; with F's call last: 1.01×
    (model_step, (64, 128, 8)),  # 0.99×; with the four readout queries routed: 1.02×
], ids=["core", "layer", "model"])
def test_the_structured_training_step_peaks_no_higher_than_the_masked_one(make_step, geometry):
    structured, masked = peak(make_step, "structured", *geometry), peak(make_step, "masked", *geometry)
    assert 0 < structured <= masked, (structured, masked)


def test_the_count_is_the_bytes_held_at_the_highest_point():
    torch.manual_seed(0)
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    result = 256 * 256 * 4 / 2**20  # MiB of one product
    assert allocated_peak_mib(lambda: (a @ b).sum()) == pytest.approx(result, rel=0.01)  # freed before the end
    kept = []
    assert allocated_peak_mib(lambda: kept.extend([a @ b, a @ b])) == pytest.approx(2 * result, rel=0.01)
