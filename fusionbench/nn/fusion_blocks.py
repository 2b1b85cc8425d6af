"""DeepAVFusion's fusion blocks (Mo & Morgado, CVPR 2024; methods.md §3.3): one interface, three interactions.

Every block updates the fusion tokens f (B, ΣF, D) from the video tokens x_v (B, N_v, D) and the audio tokens
x_a (B, N_a, D):

    f̃, ṽ, ã = LN_f(f), LN_v(x_v), LN_a(x_a)
    f ← f̃ + DropPath(Interaction(f̃, ṽ, ã))       (f instead of f̃ with residual_on_normed=False)
    f ← f + DropPath(MLP(LN_2(f)))

Interactions (attention width D' = attn_ratio · D, ``heads`` heads, Xavier-uniform linear layers):

  token        f ──q──▶ attn ◀──k,v── [x_v ‖ x_a]                          O(ΣF·(N_v+N_a)·D')

  dense        f ──q──▶ attn ◀──k,v── p_ij = [v_i ; a_j], all N_v·N_a pairs  O(N_v·N_a·2D·2D')
                                       (the pair tensor is materialised, as the method defines it)

  factorized   f = [f_mm (F) ‖ f_v (M_v) ‖ f_a (M_a)]
               f_v ──q──▶ attn ◀──k,v── x_v      (full width D)            O(M_v·N_v·D)
               f_a ──q──▶ attn ◀──k,v── x_a                                 O(M_a·N_a·D)
               f_mm ──q──▶ attn ◀──k,v── p_ij = [f_v,i ; f_a,j], M_v·M_a pairs
                                       (k: 2D → D', v: 2D → D)
               nothing here grows with N_v·N_a

``scale``: the code's pair attentions use (D/heads)^-0.5 although their q/k head width is D'/heads (the
``quirk_attn_scale`` of the model); the token interaction uses its own head width.

A missing modality (unimodal input) is ``None``: each term that needs it is omitted, i.e. contributes no update to
its fusion tokens; terms that need only the present modality run as usual. token: f reads the present tokens.
dense: every pair needs both, so the interaction is omitted and the block is the residual and the MLP.
factorized: the present modality's aggregation runs; the pair term (f_mm) and the absent aggregation are omitted.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionbench.nn.block import Attention, DropPath, Mlp


def split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)  # (B, h, N, d/h)


def merge_heads(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)  # (B, N, h·d)


def all_pairs(x: Tensor, y: Tensor) -> Tensor:
    """p_ij = [x_i ; y_j] for every (i, j), i-major: (B, N_x, D) × (B, N_y, D) → (B, N_x·N_y, 2D)."""
    n_x, n_y = x.shape[1], y.shape[1]
    pairs = torch.cat([x[:, :, None].expand(-1, -1, n_y, -1), y[:, None].expand(-1, n_x, -1, -1)], dim=-1)
    return pairs.flatten(1, 2)  # (B, N_x·N_y, 2D)


class TokenInteraction(nn.Module):
    """f queries over [x_v ‖ x_a] at width D' (plain fusion tokens)."""

    def __init__(self, dim: int, inner: int, heads: int, scale: float | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, inner)
        self.kv = nn.Linear(dim, 2 * inner)
        self.proj = nn.Linear(inner, dim)

    def forward(self, f: Tensor, xv: Tensor | None, xa: Tensor | None) -> Tensor:
        keys = torch.cat([x for x in (xv, xa) if x is not None], dim=1)  # (B, N_v + N_a, D): what is present
        k, v = self.kv(keys).chunk(2, dim=-1)  # each (B, N_k, D')
        out = F.scaled_dot_product_attention(*(split_heads(t, self.heads) for t in (self.q(f), k, v)))
        return self.proj(merge_heads(out))  # (B, ΣF, D)


class DenseInteraction(nn.Module):
    """f queries over every (video, audio) token pair p_ij = [v_i ; a_j]: k, v = W_kv p (2D → 2D')."""

    def __init__(self, dim: int, inner: int, heads: int, scale: float | None = None) -> None:
        super().__init__()
        self.heads, self.scale = heads, scale
        self.q = nn.Linear(dim, inner)
        self.kv = nn.Linear(2 * dim, 2 * inner)
        self.proj = nn.Linear(inner, dim)

    def forward(self, f: Tensor, xv: Tensor | None, xa: Tensor | None) -> Tensor:
        if xv is None or xa is None:
            return f.new_zeros(f.shape)  # every pair needs both modalities: the term is omitted (no update)
        k, v = self.kv(all_pairs(xv, xa)).chunk(2, dim=-1)  # each (B, N_v·N_a, D')
        q, k, v = (split_heads(t, self.heads) for t in (self.q(f), k, v))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v, scale=self.scale)))  # (B, ΣF, D)


class FactorizedInteraction(nn.Module):
    """Aggregate each modality into M_v / M_a tokens, then f_mm queries over the M_v·M_a aggregated pairs."""

    def __init__(self, dim: int, inner: int, heads: int, scale: float | None, num_tokens: tuple[int, int, int]) -> None:
        super().__init__()
        self.heads, self.scale, self.num_tokens = heads, scale, tuple(num_tokens)  # (F, M_v, M_a)
        self.aggr_v = Attention(dim, heads)  # f_v over x_v, full width
        self.aggr_a = Attention(dim, heads)  # f_a over x_a
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(2 * dim, inner)
        self.v = nn.Linear(2 * dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, f: Tensor, xv: Tensor | None, xa: Tensor | None) -> Tensor:
        f_mm, f_v, f_a = f.split(self.num_tokens, dim=1)  # (B, F, D), (B, M_v, D), (B, M_a, D)
        u_v = self.aggr_v(f_v, xv) if xv is not None else f_v.new_zeros(f_v.shape)  # absent: omitted (no update)
        u_a = self.aggr_a(f_a, xa) if xa is not None else f_a.new_zeros(f_a.shape)
        if xv is None or xa is None:
            u_mm = f_mm.new_zeros(f_mm.shape)  # the pairs need both modalities: omitted (no update)
        else:
            pairs = all_pairs(u_v, u_a)  # (B, M_v·M_a, 2D)
            q, k, v = (split_heads(t, self.heads) for t in (self.q(f_mm), self.k(pairs), self.v(pairs)))
            u_mm = self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v, scale=self.scale)))  # (B, F, D)
        return torch.cat([u_mm, u_v, u_a], dim=1)  # (B, ΣF, D)


INTERACTIONS = {"token": TokenInteraction, "dense": DenseInteraction, "factorized": FactorizedInteraction}


class FusionBlock(nn.Module):
    """Pre-LN block over the fusion tokens with one of the three interactions (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        dim: int,
        heads: int,
        num_tokens: tuple[int, int, int],
        attn_ratio: float = 0.25,
        mlp_ratio: float = 1.0,
        drop_path: float = 0.0,
        residual_on_normed: bool = True,
        quirk_attn_scale: bool = True,
    ) -> None:
        super().__init__()
        if kind not in INTERACTIONS:
            raise ValueError(f"fusion_block={kind!r} must be one of {', '.join(INTERACTIONS)}")
        inner = int(round(attn_ratio * dim))
        if inner % heads or inner == 0:
            raise ValueError(f"attn_ratio·dim = {inner} must be a positive multiple of heads={heads}")
        scale = (dim / heads) ** -0.5 if quirk_attn_scale else (inner / heads) ** -0.5
        self.residual_on_normed = residual_on_normed
        self.norm_f, self.norm_v, self.norm_a = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        extra = (num_tokens,) if kind == "factorized" else ()
        self.attn = INTERACTIONS[kind](dim, inner, heads, scale, *extra)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, f: Tensor, xv: Tensor | None, xa: Tensor | None) -> Tensor:
        """``f`` (B, ΣF, D); ``xv`` (B, N_v, D) or None; ``xa`` (B, N_a, D) or None → new ``f`` (B, ΣF, D)."""
        fn = self.norm_f(f)
        vn = self.norm_v(xv) if xv is not None else None
        an = self.norm_a(xa) if xa is not None else None
        f = (fn if self.residual_on_normed else f) + self.drop_path(self.attn(fn, vn, an))
        return f + self.drop_path(self.mlp(self.norm2(f)))
