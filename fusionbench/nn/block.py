"""Pre-LN transformer block over ``F.scaled_dot_product_attention``.

The attention takes queries from ``x`` and keys/values from ``context`` (default: ``x``), with the same weights, so a
routing policy can be computed group by group (e.g. Zorro: A over A, V over V, F over [A ‖ V ‖ F]) and still equal the
dense masked formulation token for token: LayerNorm, the projections and the MLP are all per token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth per example (drops the whole residual branch with probability ``p``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.empty(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    """Multi-head attention: queries from ``x`` (B, N_q, D), keys/values from ``context`` (B, N_k, D)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``mask``: bool, True = may attend; broadcastable to (B, heads, N_q, N_k)."""
        context = x if context is None else context
        b, n_q, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n_q, h, d // h).transpose(1, 2)  # (B, h, N_q, d_h)
        k, v = self.kv(context).view(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)  # each (B, h, N_k, d_h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, N_q, d_h)
        return self.proj(out.transpose(1, 2).reshape(b, n_q, d))  # (B, N_q, D)


class Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-LN ViT block: x ← x + Attn(LN(x), LN(context)); x ← x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, N_q, D) attends over ``context`` (B, N_k, D), default ``x`` itself."""
        q_in = self.norm1(x)
        kv_in = q_in if context is None else self.norm1(context)
        x = x + self.drop_path(self.attn(q_in, kv_in, mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def drop_path_rates(depth: int, max_rate: float) -> list[float]:
    """Linearly increasing stochastic depth ``l / (L - 1) * max_rate`` (MBT/ViT rule)."""
    return [max_rate * i / max(depth - 1, 1) for i in range(depth)]


def make_blocks(depth: int, dim: int, heads: int, mlp_ratio: float, drop_path: float) -> nn.ModuleList:
    return nn.ModuleList(Block(dim, heads, mlp_ratio, p) for p in drop_path_rates(depth, drop_path))
