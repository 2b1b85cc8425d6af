"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022), as
``train.balance=ogm_ge`` (``ogm``: modulation without the noise; ``none``: off, the default).

Paper rule (arXiv 2203.15332 Eq. 9-10, and the official code GeWu-Lab/OGM-GE_CVPR2022 ``main.py``), per training
step, with u ∈ {a, v} and φ_u the unimodal logits of the batch's clips:
    s_u = Σ_i softmax(φ_u(x_i))[y_i]                     (the batch's summed score of the true class)
    ρ_a = s_a / s_v,  ρ_v = 1 / ρ_a
    k_u = 1 − tanh(α · ρ_u)  if ρ_u > 1,  else 1        (only the dominant modality is slowed)
    after backward:  g ← k_u · g + N(0, std(g)²)        (GE: for *every* modulated parameter of *both* modalities,
                                                         std of that parameter's own gradient before scaling, + 1e-8)
applied to the encoder of modality u only (the code: the 4-D conv kernels of ``audio_net`` / ``visual_net``; not
their BatchNorm or biases, not the fusion head), for epochs ``modulation_starts … modulation_ends`` (README default
0 … 50 of 100), α = 0.1 (README default; 0.8 recommended for CREMA-D). The code's Eq. 10 is 1 − tanh(α·ρ), not
1 − tanh(α·(ρ − 1)) as some re-implementations write it: k jumps from 1 to 1 − tanh(α) as ρ passes 1.

fusionbench's choices:
- Unimodal logits φ_u: the fusion's own unimodal readout, ``model(audio=x_a).streams["audio"]`` (and video), on the
  clips of the batch that have both modalities. Late fusion and Zorro document their A+V streams as bit-identical to
  it (their audio / video readouts never read the other modality): no extra cost. Mid, MBT and DeepAVFusion mix the
  modalities before their readouts, so the unimodal path is run again without gradients: one extra forward of each
  tower per step (~ +1/3 of a step's forward + backward). The paper's φ_u is the audio half of the concatenation
  head applied to the audio feature: the same thing for a model whose encoders never meet.
- Modulated parameters: the weights of every Linear / Conv layer of the modality's own encoder — the transformer's
  counterpart of the conv kernels the code modulates (biases, norms, positional embeddings, CLS tokens are not):
  ``ENCODERS`` names the modules per fusion family. Zorro's backbone is shared by both modalities, so only its
  tokenizers are modality-own (a stated rule; the shared blocks are not modulated). Early fusion has no
  per-modality streams and is refused (``check``), as is the linear probe (its encoder is frozen).
- Window: the first ``train.ogm_until`` of the optimiser steps (0.5: the README's 0 … 50 of 100 epochs).
- Multi-label: s_u sums, per clip, the mean sigmoid probability of its positive classes (the paper is multi-class).
- DDP: s_a and s_v are summed over the ranks before ρ, and the noise comes from a generator seeded by
  (run seed, step), so every rank applies the same k and the same noise to its (already averaged) gradients; the
  scores are summed in float64 (a precaution: the ranks add their partial sums in another order, and Eq. 10 jumps at
  ρ = 1). Measured (gloo, CPU, late, tiny, 3 epochs): 2 ranks at batch 4 and 1 process at batch 8 agree within
  2.4e-7 on every metric (tests/test_ogm_ge.py, slow).
- Gradient accumulation: only the gradient this batch added is modulated (the code has no accumulation).
- Gradient clipping (``train.grad_clip``) runs after the modulation, at the optimiser step (the code clips nothing).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BALANCE = ("none", "ogm", "ogm_ge")
PAPER_ALPHA = 0.1  # README: the default modulation setting
PAPER_UNTIL = 0.5  # README: modulation_starts 0, modulation_ends 50 of 100 epochs
NOISE_EPS = 1e-8  # the code's std(g) + 1e-8
MODALITIES = ("audio", "video")


def _encoders() -> list[tuple[type, dict[str, tuple[str, ...]], bool]]:
    """(fusion class, {modality: its encoder's module prefixes}, A+V streams are unimodal) per supported family."""
    from fusionbench.fusions.deepavfusion import DeepAVFusion
    from fusionbench.fusions.late import LateFusion
    from fusionbench.fusions.zorro import Zorro
    from fusionbench.nn.towers import TowerFusion

    towers = {m: (f"tokenizer.{m}", f"towers.blocks.{m}") for m in MODALITIES}
    return [
        (LateFusion, towers, True),  # before TowerFusion: late's streams are its unimodal readouts
        (TowerFusion, towers, False),  # mid, MBT
        (DeepAVFusion, {m: (f"tokenizer.{m}", f"blocks.{m}") for m in MODALITIES}, False),
        (Zorro, {m: (f"tokenizer.{m}",) for m in MODALITIES}, True),
    ]


def family(model_cls: type) -> tuple[dict[str, tuple[str, ...]], bool] | None:
    for cls, prefixes, pure in _encoders():
        if issubclass(model_cls, cls):
            return prefixes, pure
    return None


def supported_fusions() -> list[str]:
    from fusionbench.registry import get_fusion, list_fusions

    return [name for name in list_fusions() if family(get_fusion(name)) is not None]


def check(fusion: str, protocol: str) -> str | None:
    """Why ``train.balance`` cannot modulate this run (None: it can)."""
    from fusionbench.registry import get_fusion

    if protocol != "finetune":
        return f"needs train.protocol=finetune (train.protocol={protocol!r} trains no encoder)"
    if family(get_fusion(fusion)) is None:
        return (f"fusion={fusion!r} has no per-modality streams to modulate; it supports "
                f"{', '.join(supported_fusions())}")
    return None


def modulated_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """{modality: the Linear / Conv weights of its own encoder} (see the module docstring)."""
    found = family(type(model))
    if found is None:
        raise ValueError(f"{type(model).__name__} has no per-modality encoder OGM-GE can modulate")
    prefixes, _ = found
    out: dict[str, list[nn.Parameter]] = {m: [] for m in MODALITIES}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or not module.weight.requires_grad:
            continue
        for m, heads in prefixes.items():
            if any(name == h or name.startswith(f"{h}.") for h in heads):
                out[m].append(module.weight)
    return out


def true_class_score(logits: Tensor, target: Tensor, multilabel: bool = False) -> Tensor:
    """Σ over the batch of the true class's probability: softmax(logits)[y] (multi-label: the mean sigmoid of the
    clip's positive classes). ``logits`` (B, C), ``target`` (B,) or multi-hot (B, C) → scalar."""
    logits = logits.float()
    if multilabel:
        positive = target.float()  # (B, C)
        per_clip = (torch.sigmoid(logits) * positive).sum(1) / positive.sum(1).clamp_min(1)  # (B,)
        return per_clip.double().sum()
    # summed in float64: under DDP the ranks' partial sums are added again, and Eq. 10 jumps at ρ = 1 (a precaution)
    return F.softmax(logits, dim=1).gather(1, target[:, None]).double().sum()  # (B, 1) → ()


def coefficients(score_audio: float, score_video: float, alpha: float) -> dict[str, float]:
    """Eq. 10: {"audio": k_a, "video": k_v, "ratio_audio": ρ_a} from the summed scores s_a, s_v."""
    if score_video <= 0 or score_audio <= 0:  # no evidence either way (an empty batch): no modulation
        return {"audio": 1.0, "video": 1.0, "ratio_audio": 1.0}
    ratio_a = score_audio / score_video
    ratio_v = 1.0 / ratio_a
    return {
        "audio": 1.0 - math.tanh(alpha * ratio_a) if ratio_a > 1 else 1.0,
        "video": 1.0 - math.tanh(alpha * ratio_v) if ratio_v > 1 else 1.0,
        "ratio_audio": ratio_a,
    }


def unimodal_logits(model: nn.Module, out_av, audio: Tensor, video: Tensor) -> dict[str, Tensor]:
    """{modality: φ_u (B, C)} for clips with both modalities: the A+V forward's streams where the fusion documents
    them as unimodal (late, Zorro), else the unimodal path run again without gradients."""
    _, pure = family(type(model))
    if pure:
        return {m: out_av.streams[m].detach() for m in MODALITIES}
    with torch.no_grad():
        return {"audio": model(audio=audio, video=None).streams["audio"],
                "video": model(audio=None, video=video).streams["video"]}


def noise_generator(seed: int, step: int) -> torch.Generator:
    """GE noise of one optimiser step: the same on every rank, a function of (seed, step) only."""
    return torch.Generator().manual_seed(hash((int(seed), int(step), 0x06E)) & (2**63 - 1))


@torch.no_grad()
def modulate(
    params: dict[str, list[nn.Parameter]],
    k: dict[str, float],
    noise: bool,
    generator: torch.Generator | None = None,
    before: dict[int, Tensor] | None = None,
) -> None:
    """In place: each modulated gradient g ← k_u·g (+ N(0, (std(g) + 1e-8)²) when ``noise``). ``before``: {id(param):
    its gradient before this batch's backward} (gradient accumulation): only the added part is modulated."""
    for modality, plist in params.items():
        for p in plist:
            if p.grad is None:
                continue
            old = before.get(id(p)) if before else None
            g = p.grad if old is None else p.grad - old
            new = g * k[modality]
            if noise:
                std = g.float().std() + NOISE_EPS
                draw = torch.randn(g.shape, generator=generator, dtype=torch.float32)
                new = new + (draw.to(g.device) * std).to(g.dtype)
            p.grad.copy_(new if old is None else old + new)
