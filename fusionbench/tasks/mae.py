"""``objective=mae``: audio-visual masked autoencoding (DeepAVFusion's ``avmae.py``, methods.md §3.4).

Paper rule: each clip's video and audio tokens are masked at random, MAE style, with ratios 0.75 (video) and 0.8
(audio); only the visible tokens enter the encoder (the fusion tokens too, unmasked). One light decoder per modality:
a linear embedding, a learned mask token at the masked positions, a fixed sin-cos positional embedding, plain
transformer blocks; the encoder's fusion tokens are embedded and prepended (no positional embedding) and removed
before the linear prediction of each patch's pixels. Loss: MSE on the masked patches only, the targets normalised
per patch (mean / variance, eps 1e-6, ``norm_pix_loss``); L = L_video + L_audio.

fusionbench's choices:
- Visible tokens per clip: exactly round(N·(1 − r)) (the code's int() differs by at most one token).
- The decoder is narrow and shallow (``pretrain.decoder_dim/depth/heads``; the paper's is 512 wide, 8 blocks, 16 heads).
  Fusion tokens go through the decoder's own embedding (one Linear for all encoder tokens).
- The sin-cos embedding has one band per grid axis (audio: time, frequency; video: time, height, width), each
  ``2·⌊dim / (2·axes)⌋`` wide, zero-padded to ``dim`` (DeepAVFusion's frames and spectrograms are 2-D; ours are 2-D
  and 3-D).
- Fusions: DeepAVFusion (prefix = its ΣF fusion tokens, shared by both decoders) and the two-tower fusions late, mid
  and MBT (prefix = the tower's CLS, as in MAE; MBT's bottlenecks are internal and not decoded). Early fusion and
  Zorro run one shared backbone over both modalities: not supported here.
"""
from __future__ import annotations

import itertools

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from fusionbench.fusions.deepavfusion import DeepAVFusion
from fusionbench.fusions.late import LateFusion
from fusionbench.fusions.mbt import MBT
from fusionbench.fusions.mid import MidFusion
from fusionbench.nn.block import make_blocks
from fusionbench.nn.model import FusionModel
from fusionbench.nn.tokenizers import AudioPatchEmbed, VideoTubeletEmbed
from fusionbench.nn.towers import MODALITIES
from fusionbench.tasks.pretrain_base import PretrainTask

TOWER_FUSIONS = (LateFusion, MidFusion, MBT)
MAE_FUSIONS = (DeepAVFusion, *TOWER_FUSIONS)


def num_visible(n_tokens: int, ratio: float) -> int:
    """round(N·(1 − r)) tokens stay visible; at least one must."""
    keep = round(n_tokens * (1 - ratio))
    if not 1 <= keep <= n_tokens:
        raise ValueError(f"mask ratio {ratio} leaves {keep} of {n_tokens} tokens visible (need >= 1)")
    return keep


def random_masking(batch: int, n_tokens: int, ratio: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """A fresh random subset per clip: (keep (B, K) indices of the visible tokens, ascending; masked (B, N) bool)."""
    keep = torch.rand(batch, n_tokens, device=device).argsort(dim=1)[:, : num_visible(n_tokens, ratio)]
    keep = keep.sort(dim=1).values  # (B, K)
    masked = torch.ones(batch, n_tokens, dtype=torch.bool, device=device)
    masked.scatter_(1, keep, False)  # (B, N)
    return keep, masked


def gather_tokens(x: Tensor, keep: Tensor) -> Tensor:
    """x (B, N, D), keep (B, K) → (B, K, D)."""
    return torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))


def patchify_audio(audio: Tensor, embed: AudioPatchEmbed) -> Tensor:
    """(B, 1, F, T) → (B, N_a, p_f·p_t), the token order of ``AudioPatchEmbed`` (time-major)."""
    (g_f, g_t), (p_f, p_t) = embed.grid, embed.patch
    x = audio.reshape(-1, g_f, p_f, g_t, p_t).permute(0, 3, 1, 2, 4)  # (B, G_t, G_f, p_f, p_t)
    return x.reshape(-1, g_t * g_f, p_f * p_t)


def patchify_video(video: Tensor, embed: VideoTubeletEmbed) -> Tensor:
    """(B, 3, T, H, W) → (B, N_v, 3·p_t·p_h·p_w), the token order of ``VideoTubeletEmbed``."""
    (g_t, g_h, g_w), (p_t, p_h, p_w) = embed.grid, embed.patch
    x = video.reshape(-1, 3, g_t, p_t, g_h, p_h, g_w, p_w).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(-1, g_t * g_h * g_w, 3 * p_t * p_h * p_w)


def token_grid(embed: AudioPatchEmbed | VideoTubeletEmbed) -> tuple[int, ...]:
    """The grid in token order: audio (G_t, G_f) (time-major), video (G_t, G_h, G_w)."""
    return (embed.grid[1], embed.grid[0]) if isinstance(embed, AudioPatchEmbed) else tuple(embed.grid)


def sincos_pos_embed(dim: int, grid: tuple[int, ...]) -> Tensor:
    """Fixed sin-cos embedding (N, dim) of the grid's tokens in row-major order, one band per axis."""
    band = 2 * (dim // (2 * len(grid)))
    if band == 0:
        raise ValueError(f"decoder dim {dim} is too narrow for a {len(grid)}-axis sin-cos embedding")
    omega = 1.0 / 10000 ** (torch.arange(band // 2, dtype=torch.float64) / (band // 2))  # (band/2,)
    coords = torch.tensor(list(itertools.product(*(range(g) for g in grid))), dtype=torch.float64)  # (N, axes)
    parts = []
    for axis in range(len(grid)):
        angle = coords[:, axis, None] * omega  # (N, band/2)
        parts += [angle.sin(), angle.cos()]
    out = torch.cat(parts, dim=1)  # (N, band·axes)
    return nn.functional.pad(out, (0, dim - out.shape[1])).float()  # (N, dim)


class MAEDecoder(nn.Module):
    """One modality's decoder: embed, mask tokens, fixed sin-cos pos-emb, [prefix ‖ tokens] blocks, prediction."""

    def __init__(self, enc_dim: int, dim: int, depth: int, heads: int, grid: tuple[int, ...], patch_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.empty(1, 1, dim).normal_(std=0.02))
        self.register_buffer("pos", sincos_pos_embed(dim, grid)[None], persistent=False)  # (1, N, dim), fixed
        self.blocks = make_blocks(depth, dim, heads, 4.0, 0.0)
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_dim)

    def forward(self, visible: Tensor, keep: Tensor, prefix: Tensor) -> Tensor:
        """visible (B, K, D_enc), keep (B, K), prefix (B, P, D_enc) → predicted patches (B, N, patch_dim)."""
        x = self.embed(visible)  # (B, K, d)
        b, n, d = x.shape[0], self.pos.shape[1], x.shape[-1]
        full = self.mask_token.expand(b, n, d).scatter(1, keep[..., None].expand(-1, -1, d), x)  # (B, N, d)
        seq = torch.cat([self.embed(prefix), full + self.pos], dim=1)  # (B, P + N, d): no pos-emb on the prefix
        for block in self.blocks:
            seq = block(seq)
        return self.pred(self.norm(seq[:, prefix.shape[1] :]))  # (B, N, patch_dim): prefix removed


def masked_patch_loss(pred: Tensor, target: Tensor, masked: Tensor, norm_pix: bool) -> Tensor:
    """MSE over the masked patches only; ``norm_pix``: targets normalised per patch by their mean and variance."""
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = (pred - target).pow(2).mean(-1)  # (B, N)
    return (per_patch * masked).sum() / masked.sum()


def encode_visible(model: FusionModel, tokens: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Visible tokens {m: (B, K_m, D)} → (encoded, normalised {m: (B, K_m, D)}; decoder prefix {m: (B, P, D)})."""
    if isinstance(model, DeepAVFusion):
        out, f = model.encode(tokens)
        f = model.norms["fusion"](f)  # (B, ΣF, D)
        return {m: model.norms[m](x) for m, x in out.items()}, {m: f for m in out}
    out = {m: model.towers.norm(x) for m, x in model.encode(tokens).items()}  # (B, 1 + K_m, D), CLS first
    return {m: x[:, 1:] for m, x in out.items()}, {m: x[:, :1] for m, x in out.items()}


class MAETask(PretrainTask):
    def __init__(self, model: FusionModel, pretrain_cfg: DictConfig, train_cfg: DictConfig, batch_size: int) -> None:
        super().__init__(model, train_cfg, batch_size)
        if not isinstance(model, MAE_FUSIONS):
            raise ValueError(f"objective=mae supports deepavfusion, late, mid and mbt, not {type(model).__name__}")
        self.ratios = {"audio": float(pretrain_cfg.mask_ratio_audio), "video": float(pretrain_cfg.mask_ratio_video)}
        self.norm_pix = bool(pretrain_cfg.norm_pix_loss)
        tok = model.tokenizer
        embeds = {"audio": tok.audio, "video": tok.video}
        for m, e in embeds.items():
            num_visible(e.num_tokens, self.ratios[m])  # a ratio that leaves nothing visible fails here, not mid-run
        self.decoders = nn.ModuleDict({
            m: MAEDecoder(model.dim, pretrain_cfg.decoder_dim, pretrain_cfg.decoder_depth, pretrain_cfg.decoder_heads,
                          token_grid(e), e.proj.in_features)
            for m, e in embeds.items()
        })

    def reconstruct(self, audio: Tensor, video: Tensor) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """{m: (predicted patches (B, N, P), target patches (B, N, P), masked (B, N))}, a fresh mask per call."""
        tok = self.model.tokenizer
        full = dict(zip(MODALITIES, tok(audio, video)))  # {m: (B, N_m, D)}, positional embeddings added
        masks = {m: random_masking(len(x), x.shape[1], self.ratios[m], x.device) for m, x in full.items()}
        visible = {m: gather_tokens(x, masks[m][0]) for m, x in full.items()}  # masked tokens never enter the encoder
        encoded, prefix = encode_visible(self.model, visible)
        targets = {"audio": patchify_audio(audio, tok.audio), "video": patchify_video(video, tok.video)}
        return {m: (self.decoders[m](encoded[m], masks[m][0], prefix[m]), targets[m], masks[m][1]) for m in full}

    def objective(self, audio: Tensor, video: Tensor) -> dict[str, Tensor]:
        terms = {f"mse_{m}": masked_patch_loss(p, t, k, self.norm_pix) for m, (p, t, k) in
                 self.reconstruct(audio, video).items()}
        return {"loss": terms["mse_video"] + terms["mse_audio"], **terms}
