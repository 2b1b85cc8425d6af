"""Zorro: the masked multimodal transformer (Recasens et al., arXiv 2301.09595).

| zorro | N_f fusion tokens | one backbone, every layer masked: A→A, V→V, F→A,V,F; 4 readouts (audio, video, fusion, global) |

Paper rule (methods.md §2): one shared transformer over [A | V | F] with N_f learned fusion tokens F. At every layer
the attention mask lets audio read audio only, video read video only, and fusion read everything, so the audio and
video streams stay modality-pure and information flows one way, into F. Four learned readout queries decode the final
tokens through masked cross-attention: audio reads A, video reads V, fusion reads F, global reads all tokens.

The routing is the two mask functions below (``zorro_mask``, ``readout_mask``). ``forward_structured`` computes the
same thing with the same weights and no N² masked work: every per-token op (LayerNorm, the q / kv projections, the
MLP, stochastic depth) runs over the whole sequence [A | V | F] as in the masked path, and only the attention core is
routed (``routed_attention``): A's queries read A's keys, V's read V's, F's read all:
    A ← Block(A, context=A);  V ← Block(V, context=V);  F ← Block(F, context=[A ‖ V ‖ F])
Both paths read out through one masked call (``Zorro.read_out``; fusionbench's choice): its four queries discard 2·N
query-key pairs per head, against the backbone's ~N²/2 per layer, and routing them would cost more memory than it
saves arithmetic. ``forward_masked`` is the dense masked reference (one Block call over
[A | V | F] with ``zorro_mask``); tests hold the two equal, in training too (stochastic depth is drawn once per
sequence on both paths).

``forward`` (and ``embed``) take the faster of the two for the sequence (fusionbench's choice, ``use_structured``):
the structured path from ``STRUCTURED_MIN_TOKENS`` tokens (A + V + F) up, the masked one below, where the three
smaller attention calls cost more in per-call overhead than the masked pairs they skip. The threshold is from
``benchmarks/perf.py``'s whole-model training step on the project's loaded 2-core CPU (results/perf.csv, one run,
widths 64 and 256): the structured step runs at 0.96-1.01× the masked one's speed at 48 tokens, 1.00-1.02× at 80,
1.07-1.09× at 2 × 64 + 16 = 144, 1.04-1.24× at 208 and 272, 1.38-1.88× at 2 × 512 + 16 (an earlier run, before the
memory changes: 0.90-0.93×, 0.96-1.01×, 0.97-1.04×, 0.99-1.15×, 1.27-1.94×). The two paths give the same outputs
(tested).

Unimodal policy: exact. An absent modality's tokens are dropped; F still reads what is present. Audio-only: streams
``audio`` (A never reads V or F: the same bits whatever the video holds, on both paths; equal to float rounding to
the audio stream of the A+V forward, where the one masked readout call runs over more keys), ``fusion`` and ``global``
(from audio alone), and ``logits`` = the ``audio`` readout. Video-only is symmetric.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

from fusionbench.nn.block import Attention, make_blocks
from fusionbench.nn.masks import TokenType, token_types
from fusionbench.nn.model import FusionModel, FusionOutput, mean_stream_loss
from fusionbench.registry import register_fusion

A, V, F, G = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION, TokenType.GLOBAL
READOUTS = {"audio": A, "video": V, "fusion": F, "global": G}  # readout name → the type of its query


def zorro_mask(types_q: Tensor, types_k: Tensor) -> Tensor:
    """Self-attention route: a token reads keys of its own type; fusion tokens read every key. (N_q, N_k) bool."""
    return (types_q[:, None] == types_k[None, :]) | (types_q[:, None] == F)


def routed_attention(attn: Attention, x: Tensor, sizes: dict[TokenType, int]) -> Tensor:
    """``attn`` under ``zorro_mask`` without the masked pairs: normed tokens (B, N, D) in groups of ``sizes`` (in
    sequence order) → (B, N, D). One q and one kv projection over the whole sequence, as the masked path runs them;
    then ``routed_sdpa`` on per-group views (no key or value is copied for F's context), and the output projection
    per group, concatenated after it: no merged pre-projection tensor is kept for the backward (in training 4-9 %
    less peak memory than projecting the merged groups; benchmarks/perf.py)."""
    b, n, d = x.shape
    h = attn.heads
    q = attn.q(x).view(b, n, h, d // h).transpose(1, 2)  # (B, h, N, d_h)
    k, v = attn.kv(x).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)  # each (B, h, N, d_h)
    out = routed_sdpa(q, k, v, sizes)  # {type: (B, h, N_t, d_h)}
    return torch.cat([attn.proj(o.transpose(1, 2).reshape(b, -1, d)) for o in out.values()], dim=1)  # (B, N, D)


def routed_sdpa(q: Tensor, k: Tensor, v: Tensor, sizes: dict[TokenType, int]) -> dict[TokenType, Tensor]:
    """The attention core of ``zorro_mask`` on q, k, v (B, h, N, d_h) in groups of ``sizes`` (sequence order, F
    among them) → {type: (B, h, N_t, d_h)}: A's queries read A's keys, V's read V's, F's read all N; no masked pair is
    computed, no key or value copied.

    F's call is made first and k, v are split after it, on purpose: autograd runs the later nodes first, so the
    groups' backward, and the split's that gathers their key and value gradients into one full-size tensor each, come
    before F's; F's full-size key and value gradients are made once the groups' saved outputs, incoming gradients and
    per-group key and value gradients are freed, and are summed into the gathered ones in place. In training, at 2 ×
    512 + 16 tokens, width 256, batch 8, the attention core peaks at 0.89× the masked call's memory (1.06× with F's
    call after the split or last); a whole layer at 0.94× (1.04× with F's call last); ``tests/test_zorro_memory.py``
    holds both at or below 1."""
    split = lambda t: dict(zip(sizes, t.split(list(sizes.values()), dim=2)))  # noqa: E731 {type: (B, h, N_t, d_h)}
    q_of = split(q)
    out_f = F_.scaled_dot_product_attention(q_of[F], k, v)  # (B, h, N_f, d_h): before the split, see above
    k_of, v_of = split(k), split(v)
    out = {t: F_.scaled_dot_product_attention(q_of[t], k_of[t], v_of[t]) for t in sizes if t != F}
    return {t: out_f if t == F else out[t] for t in sizes}


def readout_mask(types_q: Tensor, types_k: Tensor) -> Tensor:
    """Readout route: audio query reads A, video V, fusion F; the global query reads every key. (N_q, N_k) bool."""
    return (types_q[:, None] == types_k[None, :]) | (types_q[:, None] == G)


@register_fusion("zorro")
class Zorro(FusionModel):
    STRUCTURED_MIN_TOKENS = 128  # A + V + F tokens from which forward takes the structured path (perf.py)
    def __init__(
        self, num_classes: int, *, num_fusion_tokens: int = 16, fused_readout: str = "global", **geometry
    ) -> None:
        super().__init__(num_classes, **geometry)
        if fused_readout not in ("global", "fusion"):
            raise ValueError(f"fused_readout={fused_readout!r} must be 'global' or 'fusion'")
        self.fused_readout = fused_readout
        self.fusion_tokens = nn.Parameter(torch.empty(1, num_fusion_tokens, self.dim).normal_(std=0.02))  # (1, N_f, D)
        self.blocks = make_blocks(self.depth, self.dim, self.heads, self.mlp_ratio, self.drop_path)  # one backbone
        self.norm = nn.LayerNorm(self.dim)  # on the final tokens, before the readout
        query = {r: nn.Parameter(torch.empty(1, 1, self.dim).normal_(std=0.02)) for r in READOUTS}
        self.readout_query = nn.ParameterDict(query)  # one learned query per output
        self.readout = Attention(self.dim, self.heads)  # one cross-attention, one query per output
        self.out_norm = nn.ModuleDict({r: nn.LayerNorm(self.dim) for r in READOUTS})
        self.heads_out = nn.ModuleDict({r: nn.Linear(self.dim, num_classes) for r in READOUTS})
        for head in self.heads_out.values():
            self.init_head(head)

    def _groups(self, audio: Tensor | None, video: Tensor | None) -> dict[TokenType, Tensor]:
        a, v = self.tokenizer(audio, video)  # (B, N_a, D), (B, N_v, D); an absent modality is None
        groups = {t: x for t, x in ((A, a), (V, v)) if x is not None}
        # repeat, not expand: a module input must not be an expanded parameter view (FlopCounterMode under no_grad)
        groups[F] = self.fusion_tokens.repeat(next(iter(groups.values())).shape[0], 1, 1)  # (B, N_f, D)
        return groups

    def _output(self, pooled: dict[str, Tensor]) -> FusionOutput:
        """``pooled``: {readout: (B, D)} → per-readout logits; ``logits`` = the fused readout, or the present
        modality's readout when one modality is absent."""
        streams = {r: self.heads_out[r](self.out_norm[r](z)) for r, z in pooled.items()}  # {r: (B, C)}
        if "audio" in streams and "video" in streams:
            fused = self.fused_readout
        else:  # unimodal: the present modality's pure readout
            fused = "audio" if "audio" in streams else "video"
        return FusionOutput(logits=streams[fused], streams=streams)

    def use_structured(self, num_tokens: int) -> bool:
        """The automatic path choice: the structured routing at ``num_tokens`` ≥ ``STRUCTURED_MIN_TOKENS``, else the
        dense masked reference (same outputs; faster at few tokens)."""
        return num_tokens >= self.STRUCTURED_MIN_TOKENS

    def forward(self, audio: Tensor | None = None, video: Tensor | None = None) -> FusionOutput:
        """The faster of the two equal paths for this many tokens (``use_structured``)."""
        return self._output(self._pooled(audio, video))

    def forward_structured(self, audio: Tensor | None = None, video: Tensor | None = None) -> FusionOutput:
        """Structured routing: each group attends over exactly the keys ``zorro_mask`` allows it."""
        return self._output(self._pooled_structured(self._groups(audio, video)))

    def forward_masked(self, audio: Tensor | None = None, video: Tensor | None = None) -> FusionOutput:
        """Dense reference: one Block call over [A | V | F] per layer with ``zorro_mask``; N² attention, masked."""
        return self._output(self._pooled_masked(self._groups(audio, video)))

    def embed(self, audio: Tensor | None = None, video: Tensor | None = None) -> dict[str, Tensor]:
        """{readout: (B, D)}: the normalised readouts the heads read (audio, video, fusion, global), for pretraining."""
        return {r: self.out_norm[r](z) for r, z in self._pooled(audio, video).items()}

    def _pooled(self, audio: Tensor | None, video: Tensor | None) -> dict[str, Tensor]:
        """{readout: (B, D)} before the per-readout norm and head, by the path ``use_structured`` picks."""
        groups = self._groups(audio, video)
        structured = self.use_structured(sum(x.shape[1] for x in groups.values()))
        return self._pooled_structured(groups) if structured else self._pooled_masked(groups)

    def _pooled_structured(self, groups: dict[TokenType, Tensor]) -> dict[str, Tensor]:
        sizes = {t: x.shape[1] for t, x in groups.items()}  # order A, V, F
        x = torch.cat(list(groups.values()), dim=1)  # (B, N, D)
        for block in self.blocks:  # Block.forward with the attention routed instead of masked
            x = x + block.drop_path(routed_attention(block.attn, block.norm1(x), sizes))
            x = x + block.drop_path(block.mlp(block.norm2(x)))
        return self.read_out(x, sizes)

    def _pooled_masked(self, groups: dict[TokenType, Tensor]) -> dict[str, Tensor]:
        sizes = {t: x.shape[1] for t, x in groups.items()}  # order A, V, F
        types = token_types(*sizes.items(), device=groups[F].device)  # (N,)
        x = torch.cat(list(groups.values()), dim=1)  # (B, N, D)
        mask = zorro_mask(types, types)  # (N, N)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.read_out(x, sizes)

    def read_out(self, x: Tensor, sizes: dict[TokenType, int]) -> dict[str, Tensor]:
        """{readout: (B, D)}: the learned queries read the final tokens (B, N, D), in groups of ``sizes``, normed,
        under ``readout_mask``, in one masked call on both paths (fusionbench's choice). Routed, the four queries would
        save 2·N of their 4·N pairs per head, but each would leave its own key and value gradient, and the global
        query's and the groups' full-size ones would meet at the peak of the whole model's backward (all activations
        alive): 1.02× the masked path's training peak at 2 × 256 + 16 tokens, width 256
        (``tests/test_zorro_memory.py``)."""
        types = token_types(*sizes.items(), device=x.device)  # (N,)
        names = [r for r, t in READOUTS.items() if t in sizes or t == G]
        q_types = torch.tensor([int(READOUTS[r]) for r in names], device=x.device)  # (R,)
        queries = torch.cat([self.readout_query[r] for r in names], dim=1).expand(x.shape[0], -1, -1)  # (B, R, D)
        pooled = self.readout(queries, self.norm(x), mask=readout_mask(q_types, types))  # (B, R, D)
        return {r: pooled[:, i] for i, r in enumerate(names)}

    loss = staticmethod(mean_stream_loss)
