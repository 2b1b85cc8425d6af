"""Pretrained ViT checkpoints from local files → fusionbench's tokenizers and blocks (nothing is downloaded).

Layouts read (the key names of the official releases):
- ``timm``: a timm ViT / DeiT state dict (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N.norm1``,
  ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``norm``); DeiT's ``dist_token`` is dropped.
- ``mae``: an MAE checkpoint, the same names under a ``model`` key (decoder keys unused).
- ``ast``: an AST checkpoint (``[module.]v.`` prefix around a DeiT; ``mlp_head`` unused), spectrogram as an image with
  frequency on the height: 12 frequency rows (128 mel bins at AST's frequency stride 10).
- ``audiomae``: an AudioMAE checkpoint (``model`` key, one input channel), the spectrogram with time on the height and
  8 frequency columns (128 mel bins / 16).

Geometry rules:
- Attention: timm's fused ``qkv`` (rows q | k | v, each head-major) splits into fusionbench's ``q`` and ``kv``.
- Patch embedding: a Conv2d weight (D, C, p_h, p_w) becomes the Linear over the tokenizer's flattened patch —
  video (C, p_t, p_h, p_w), audio (p_f, p_t). 2-D → tubelet (``inflate``): ``central`` (ViViT's central-frame
  initialisation, fusionbench's default: the kernel at frame p_t // 2, zeros elsewhere) or ``average`` (I3D: the
  kernel / p_t at every frame); with p_t = 1 both are the 2-D kernel. RGB → one audio channel: summed over C (AST).
- Positional embeddings: the prefix (CLS) slot is folded into fusionbench's CLS parameter (cls_token + pos[0]); the
  patch grid is resampled bicubically (antialiased, as timm's ``resample_abs_pos_embed``) to the token grid
  when it differs, then laid out in the tokenizer's time-major order; video repeats the 2-D grid over the G_t time
  steps (ViViT). AST itself crops / bilinearly resizes; fusionbench's choice is bicubic everywhere.
- LayerNorm: every LayerNorm filled from a checkpoint takes eps 1e-6 (timm's ViT, DeiT, MAE, AST, AudioMAE; torch's
  default, fusionbench's own, is 1e-5).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionbench.errors import UserError

INFLATE = ("central", "average")
VIT_EPS = 1e-6
_BLOCK_KEYS = {  # timm name → fusionbench name inside one block (attn.qkv is split apart)
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "attn.proj.weight": "attn.proj.weight", "attn.proj.bias": "attn.proj.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.0.weight", "mlp.fc1.bias": "mlp.0.bias",
    "mlp.fc2.weight": "mlp.2.weight", "mlp.fc2.bias": "mlp.2.bias",
}


@dataclass
class ViTCheckpoint:
    """A checkpoint's ViT encoder in timm names (prefixes removed) with its layout and patch-grid orientation."""

    path: str
    layout: str  # timm | mae | ast | audiomae
    state: dict[str, Tensor]
    time_on_height: bool = False  # AudioMAE: spectrogram rows are time


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A flat tensor dict from ``.safetensors`` (safetensors) or ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``
    (``torch.load(weights_only=True)``); a ``model`` / ``state_dict`` wrapper is unwrapped."""
    return _read(path)[0]


def _read(path: str | Path) -> tuple[dict[str, Tensor], str | None]:
    """(tensors, the wrapper key they were under or None)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint file not found", where=str(path))
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError("reading .safetensors needs the safetensors package (pip install safetensors)",
                            where=str(path)) from None
    try:
        if path.suffix == ".safetensors":
            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or pickled objects weights_only refuses
        why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        raise UserError(f"cannot read checkpoint: truncated, corrupt or not a torch / safetensors file ({why})",
                        where=str(path)) from exc
    wrapper = None
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj, wrapper = obj[key], key
            break
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"not a state dict (got {type(obj).__name__})", where=str(path))
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise UserError("the checkpoint holds no tensors", where=str(path))
    return tensors, wrapper


def read_vit(path: str | Path) -> ViTCheckpoint:
    """Read a ViT checkpoint and name its layout (timm | mae | ast | audiomae)."""
    state, wrapper = _read(path)
    wrapped = wrapper == "model"
    state = {k.removeprefix("module."): v for k, v in state.items()}
    layout = "mae" if wrapped else "timm"
    if any(k.startswith("v.") for k in state):
        layout = "ast"
        state = {(k[2:] if k.startswith("v.") else k): v for k, v in state.items()}
    elif wrapped and "patch_embed.proj.weight" in state and state["patch_embed.proj.weight"].shape[1] == 1:
        layout = "audiomae"
    return ViTCheckpoint(str(path), layout, state, time_on_height=layout == "audiomae")


def _depth(state: dict[str, Tensor]) -> int:
    return len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})


def check_vit(ckpt: ViTCheckpoint, dim: int, depth: int) -> None:
    """One error listing every way the checkpoint is not a ViT of width ``dim`` and depth ``depth``."""
    s, problems = ckpt.state, []
    required = ["patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed",
                *(f"blocks.{i}.{k}" for i in range(depth) for k in ("attn.qkv.weight", "attn.qkv.bias", *_BLOCK_KEYS))]
    missing = [k for k in required if k not in s]
    if missing:
        problems.append(f"missing {len(missing)} keys ({', '.join(missing[:6])}{', …' if len(missing) > 6 else ''})")
    if _depth(s) not in (0, depth):
        problems.append(f"{_depth(s)} blocks, the model has {depth}")
    known = {"attn.qkv.weight", "attn.qkv.bias", *_BLOCK_KEYS}
    extra = sorted({k.split(".", 2)[2] for k in s if k.startswith("blocks.")} - known)
    if extra:
        problems.append(f"block parameters fusionbench's Block has not ({', '.join(extra[:6])}: e.g. layer scale)")
    shapes = {"patch_embed.proj.bias": (dim,), "pos_embed": (1, -1, dim)}
    for i in range(depth):
        shapes |= {f"blocks.{i}.attn.qkv.weight": (3 * dim, dim), f"blocks.{i}.attn.qkv.bias": (3 * dim,),
                   f"blocks.{i}.norm1.weight": (dim,), f"blocks.{i}.attn.proj.weight": (dim, dim)}
    for key, want in shapes.items():
        got = tuple(s[key].shape) if key in s else None
        if got is not None and (len(got) != len(want) or any(w not in (-1, g) for w, g in zip(want, got))):
            problems.append(f"{key} is {got}, the model needs {tuple('*' if w == -1 else w for w in want)}")
    if "patch_embed.proj.weight" in s and s["patch_embed.proj.weight"].dim() != 4:
        problems.append(f"patch_embed.proj.weight is {tuple(s['patch_embed.proj.weight'].shape)}, not a Conv2d")
    if problems:
        keys = ", ".join(list(s)[:5])
        raise UserError(f"not a ViT the model can take ({ckpt.layout} layout, dim {dim}, depth {depth}): "
                        f"{'; '.join(problems)} [checkpoint keys: {keys}, … {len(s)} in all]", where=ckpt.path)


def _prefix_tokens(state: dict[str, Tensor]) -> int:
    return int("cls_token" in state) + int("dist_token" in state)


def _pos_grid(ckpt: ViTCheckpoint, n: int) -> tuple[int, int]:
    """(rows, cols) of the checkpoint's patch grid from its token count: square for images, 12 frequency rows for AST,
    8 frequency columns for AudioMAE (their released 128-mel models)."""
    rows = {"ast": 12}.get(ckpt.layout)
    cols = {"audiomae": 8}.get(ckpt.layout)
    side = round(n ** 0.5)
    grid = (rows, n // rows) if rows else (n // cols, cols) if cols else (side, side)
    if grid[0] * grid[1] != n:
        raise UserError(f"pos_embed has {n} patch positions: not the {ckpt.layout} grid", where=ckpt.path)
    return grid


def resample_grid(pos: Tensor, grid: tuple[int, int], new: tuple[int, int]) -> Tensor:
    """(N, D) row-major over ``grid`` → (new_rows, new_cols, D), bicubic; unchanged when the grids agree."""
    x = pos.reshape(grid[0], grid[1], -1)  # (R, C, D)
    if tuple(grid) == tuple(new):
        return x
    x = F.interpolate(x.permute(2, 0, 1)[None].float(), size=new, mode="bicubic", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).to(pos.dtype)  # (R', C', D)


def video_patch_weight(w: Tensor, p_t: int, inflate: str) -> Tensor:
    """Conv2d (D, C, p_h, p_w) → the tubelet Linear weight (D, C·p_t·p_h·p_w) in its flatten order."""
    if inflate not in INFLATE:
        raise UserError(f"init.inflate={inflate!r} is not one of {', '.join(INFLATE)}", where="command line")
    w3 = torch.zeros(w.shape[0], w.shape[1], p_t, *w.shape[2:], dtype=w.dtype)  # (D, C, p_t, p_h, p_w)
    if inflate == "central":
        w3[:, :, p_t // 2] = w
    else:
        w3[:] = (w / p_t)[:, :, None]
    return w3.reshape(w.shape[0], -1)


def audio_patch_weight(w: Tensor, time_on_height: bool) -> Tensor:
    """Conv2d (D, C, p_h, p_w) → AudioPatchEmbed's Linear weight (D, p_f·p_t): channels summed (AST's rule for RGB);
    AudioMAE's (time, freq) kernel transposed to (freq, time)."""
    w = w.sum(1)  # (D, p_h, p_w)
    if time_on_height:
        w = w.transpose(1, 2)  # (D, p_f, p_t)
    return w.reshape(w.shape[0], -1)


def tower_state(ckpt: ViTCheckpoint, model: nn.Module, modality: str, *, tokenizer_only: bool = False,
                skip_norm: bool = False, inflate: str = "central") -> tuple[dict[str, Tensor], list[str], list[str]]:
    """The fusionbench state-dict entries one ViT checkpoint fills for ``modality``: its tokenizer, and (unless
    ``tokenizer_only``) the modality's blocks (or the shared backbone), its CLS and the final LayerNorm.
    Returns (entries, checkpoint keys used, notes on what was adapted)."""
    s, dim, depth = ckpt.state, model.dim, model.depth
    check_vit(ckpt, dim, depth)
    out, used, notes = {}, set(), []
    tok = getattr(model.tokenizer, modality)
    w, n_pre = s["patch_embed.proj.weight"], _prefix_tokens(s)
    used |= {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed"}
    if modality == "video":
        p_t, p_h, p_w = tok.patch
        if tuple(w.shape[1:]) != (3, p_h, p_w):
            raise UserError(f"patch_embed.proj.weight is {tuple(w.shape)}: the video tokenizer takes 3-channel "
                            f"{p_h}×{p_w} patches (set model.video_patch)", where=ckpt.path)
        out["tokenizer.video.proj.weight"] = video_patch_weight(w, p_t, inflate)
        if p_t > 1:
            notes.append(f"video patch embedding inflated to {p_t} frames ({inflate})")
        rows_cols = (tok.grid[1], tok.grid[2])
    else:
        p_f, p_t = tok.patch
        kernel = tuple(w.shape[2:][::-1]) if ckpt.time_on_height else tuple(w.shape[2:])
        if kernel != (p_f, p_t):
            raise UserError(f"patch_embed.proj.weight is {tuple(w.shape)}: the audio tokenizer takes {p_f}×{p_t} "
                            "(mel × frames) patches (set model.audio_patch)", where=ckpt.path)
        out["tokenizer.audio.proj.weight"] = audio_patch_weight(w, ckpt.time_on_height)
        if w.shape[1] > 1:
            notes.append(f"audio patch embedding: {w.shape[1]} input channels summed (AST)")
        rows_cols = (tok.grid[1], tok.grid[0]) if ckpt.time_on_height else tok.grid  # checkpoint orientation
    out[f"tokenizer.{modality}.proj.bias"] = s["patch_embed.proj.bias"]
    pos = s["pos_embed"][0]  # (n_pre + N, D)
    grid = _pos_grid(ckpt, pos.shape[0] - n_pre)
    x = resample_grid(pos[n_pre:], grid, rows_cols)  # (R', C', D) in the checkpoint's orientation
    if tuple(grid) != tuple(rows_cols):
        notes.append(f"{modality} positional embedding resampled bicubically from {grid} to {tuple(rows_cols)}")
    if modality == "video":
        x = x.reshape(1, -1, dim).repeat(1, tok.grid[0], 1)  # (1, G_t·G_h·G_w, D): the 2-D grid at every time step
    else:
        x = (x if ckpt.time_on_height else x.transpose(0, 1)).reshape(1, -1, dim)  # (1, G_t·G_f, D): time-major
    out[f"tokenizer.{modality}.pos"] = x
    if tokenizer_only:
        return out, sorted(used), notes
    blocks = _blocks_prefix(model, modality)
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"{blocks}.{i}."
        qkv_w, qkv_b = s[src + "attn.qkv.weight"], s[src + "attn.qkv.bias"]  # (3D, D), (3D,): rows q | k | v
        out[dst + "attn.q.weight"], out[dst + "attn.kv.weight"] = qkv_w[:dim], qkv_w[dim:]
        out[dst + "attn.q.bias"], out[dst + "attn.kv.bias"] = qkv_b[:dim], qkv_b[dim:]
        out |= {dst + b: s[src + a] for a, b in _BLOCK_KEYS.items()}
        used |= {src + k for k in ("attn.qkv.weight", "attn.qkv.bias", *_BLOCK_KEYS)}
    cls = _cls_key(model, modality)
    if cls and "cls_token" in s:
        out[cls] = s["cls_token"] + (s["pos_embed"][:, :1] if n_pre else 0)  # (1, 1, D): its position folded in
        used.add("cls_token")
    norm = _norm_prefix(model, modality)
    src_norm = "norm" if "norm.weight" in s else "fc_norm" if "fc_norm.weight" in s else None
    if norm and src_norm and not skip_norm:
        out[f"{norm}.weight"], out[f"{norm}.bias"] = s[f"{src_norm}.weight"], s[f"{src_norm}.bias"]
        used |= {f"{src_norm}.weight", f"{src_norm}.bias"}
        if src_norm == "fc_norm":
            notes.append("final LayerNorm from fc_norm (a global-pool fine-tuned checkpoint has no norm)")
    return out, sorted(used), notes


def _blocks_prefix(model: nn.Module, modality: str) -> str:
    """Where a modality's blocks live: ``towers.blocks.<m>`` (late / mid / mbt), ``blocks.<m>`` (deepavfusion) or the
    shared ``blocks`` (early / zorro)."""
    if hasattr(model, "towers"):
        return f"towers.blocks.{modality}"
    return f"blocks.{modality}" if isinstance(model.blocks, nn.ModuleDict) else "blocks"


def shares_backbone(model: nn.Module) -> bool:
    return not hasattr(model, "towers") and not isinstance(getattr(model, "blocks", None), nn.ModuleDict)


def _cls_key(model: nn.Module, modality: str) -> str | None:
    if hasattr(model, "towers"):
        return f"towers.cls.{modality}"
    return "cls" if isinstance(getattr(model, "cls", None), nn.Parameter) else None


def _norm_prefix(model: nn.Module, modality: str) -> str | None:
    if hasattr(model, "towers"):
        return "towers.norm"  # shared by both towers
    if isinstance(getattr(model, "norms", None), nn.ModuleDict):
        return f"norms.{modality}"
    return "norm" if isinstance(getattr(model, "norm", None), nn.LayerNorm) else None


def load_entries(model: nn.Module, entries: dict[str, Tensor], where: str) -> None:
    """Copy ``entries`` into ``model`` after checking every name and shape (one error listing all that do not fit);
    the LayerNorms filled take the ViT eps."""
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs the model's {tuple(own[k].shape)}" if k in own else f"{k} (no such parameter)"
           for k, v in entries.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise UserError(f"{len(bad)} tensors do not fit: {'; '.join(bad[:8])}", where=where)
    with torch.no_grad():
        for k, v in entries.items():
            own[k].copy_(v)
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) and f"{name}.weight" in entries:
            module.eps = VIT_EPS
