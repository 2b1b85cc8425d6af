"""``fusionbench profile``: what each fusion costs at one geometry, measured in one process.

Per fusion: parameters; FLOPs per clip counted by ``FlopCounterMode`` (``efficiency.py``), forward and forward +
backward, for the path that runs (``gflops_*``), for the dense masked formulation where the fusion has one
(``dense_gflops_*``: Zorro's ``forward_masked``, N² attention, the masked pairs computed and discarded; the same as
``gflops_*`` for fusions that route without masks) and the mask-effective count, the dense count less the attention
pairs the masks discard (``effective_gflops_*``: what the routing needs). Zorro's structured path runs the
effective count and the 2·N pairs its one masked readout call discards (four queries; ``Zorro.read_out``); below
``Zorro.STRUCTURED_MIN_TOKENS`` its ``forward`` runs the masked path (the dense count), which is faster there; train
and inference clips/s and ms/step (median after warm-up); peak memory (CUDA: ``max_memory_allocated``; CPU: the
process's peak RSS over the timed steps, reset through ``/proc/self/clear_refs``); and model FLOP utilisation, the
training FLOP rate over the float32 (or bf16) matmul rate measured on the same device in the same run
(``matmul_rate``).

A training step here is forward + the model's loss + backward + (fused) AdamW step on random inputs of the run's geometry;
fusionbench's own harness, not Lightning's loop (no data loading: ``benchmarks/`` measures that apart).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from fusionbench.evaluate.efficiency import count_params
from fusionbench.nn.model import FusionModel

CSV_COLUMNS = ("fusion", "preset", "device", "precision", "batch", "audio_tokens", "video_tokens", "params",
               "gflops_fwd", "gflops_fwd_bwd", "dense_gflops_fwd", "dense_gflops_fwd_bwd", "effective_gflops_fwd",
               "effective_gflops_fwd_bwd", "train_clips_s",
               "train_ms_step", "infer_clips_s", "infer_ms_step", "peak_mem_mb", "matmul_gflops_s", "mfu")


@dataclass
class Profile:
    fusion: str
    preset: str
    device: str
    precision: str
    batch: int
    audio_tokens: int
    video_tokens: int
    params: int
    gflops_fwd: float  # per clip
    gflops_fwd_bwd: float
    dense_gflops_fwd: float
    dense_gflops_fwd_bwd: float
    effective_gflops_fwd: float
    effective_gflops_fwd_bwd: float
    train_clips_s: float
    train_ms_step: float
    infer_clips_s: float
    infer_ms_step: float
    peak_mem_mb: float
    matmul_gflops_s: float
    mfu: float  # training FLOP/s ÷ matmul FLOP/s


def _inputs(model: FusionModel, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    audio = torch.randn(batch, 1, *model.tokenizer.audio.audio_shape, device=device)  # (B, 1, n_mels, L)
    video = torch.randn(batch, 3, *model.tokenizer.video.video_shape, device=device)  # (B, 3, T, H, W)
    return audio, video


def _autocast(device: torch.device, precision: str):
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loss(model: FusionModel, out, target: torch.Tensor) -> torch.Tensor:
    return model.loss(out, target, F.cross_entropy)


class MaskedPairs(TorchFunctionMode):
    """Counts the attention FLOPs a boolean mask throws away: each masked (query, key) pair of an
    ``F.scaled_dot_product_attention`` call is 4·d_h FLOPs per head in the forward (QKᵀ and AV, 2 per MAC), computed
    and discarded by a dense masked attention; the routing needs none of them."""

    def __init__(self) -> None:
        super().__init__()
        self.masked_flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            if mask is not None and mask.dtype == torch.bool:
                full = torch.broadcast_to(mask, (*q.shape[:-1], k.shape[-2]))  # (B, h, N_q, N_k)
                self.masked_flops += 4 * q.shape[-1] * int((~full).sum())
        return func(*args, **kwargs)


# attention forward + backward = 3.5 × forward in torch's sdpa formulas: 2 matmuls forward, 5 backward (dV, dP, the
# recomputed QKᵀ, dQ, dK)
SDPA_FWD_BWD_TWICE = 7


def count_flops(model: FusionModel, *, backward: bool, dense: bool = False, batch: int = 1,
                effective: bool = False) -> int:
    """FLOPs of one forward (and backward) pass on ``batch`` random clips; ``dense``: the fusion's
    ``forward_masked`` if it has one; ``effective``: minus the attention pairs its masks discard (``MaskedPairs``):
    the FLOPs the routing needs."""
    device = next(model.parameters()).device
    audio, video = _inputs(model, batch, device)
    forward = getattr(model, "forward_masked", None) if dense else None
    forward = forward or model
    was_training = model.training
    model.train(backward)
    counter, masked = FlopCounterMode(display=False), MaskedPairs()
    with counter, masked, torch.set_grad_enabled(backward):
        out = forward(audio=audio, video=video)
        if backward:
            _loss(model, out, torch.zeros(batch, dtype=torch.long, device=device)).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    saved = (masked.masked_flops * SDPA_FWD_BWD_TWICE // 2 if backward else masked.masked_flops) if effective else 0
    return int(counter.get_total_flops()) - saved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(step, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(device: torch.device, precision: str = "32-true", n: int | None = None, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of an n × n matmul (2n³ FLOPs) on ``device`` in the training precision."""
    n = n or (4096 if device.type == "cuda" else 1024)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _status_mb(field: str) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB → MiB
    return None


def _reset_peak(device: torch.device) -> float:
    """Reset the peak counter; returns the baseline the peak is measured from (CPU: the RSS now; CUDA: 0)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
    return _status_mb("VmRSS") or 0.0


def _peak_mb(device: torch.device, baseline: float) -> float:
    """CUDA: max allocated (weights, activations, gradients, optimiser state). CPU: the peak RSS growth over the
    timed steps (activations, gradients, optimiser state; the weights were there before), an approximation: memory the
    allocator kept from earlier work can be reused without growing the RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _status_mb("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB; the lifetime peak
    return max(0.0, peak - baseline)


class PeakMemory:
    """The peak memory of what runs between construction and ``read()`` (CUDA max allocated; CPU peak RSS growth,
    as ``profile_model`` measures them)."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.baseline = _reset_peak(self.device)

    def read(self) -> float:
        return _peak_mb(self.device, self.baseline)


def profile_model(
    model: FusionModel, *, fusion: str, preset: str, batch: int = 8, warmup: int = 3, steps: int = 10,
    precision: str = "32-true", matmul_flops_s: float | None = None,
) -> Profile:
    """Profile one built model on its own device (see the module docstring)."""
    device = next(model.parameters()).device
    flops = {(bwd, kind): count_flops(model, backward=bwd, dense=kind != "runs", effective=kind == "effective")
             for bwd in (False, True) for kind in ("runs", "dense", "effective")}
    audio, video = _inputs(model, batch, device)
    target = torch.randint(model.num_classes, (batch,), device=device)
    # fused, as the training task's (tasks/classify.py); the default for-loop AdamW is ~20 % of a small-preset step
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def train_step() -> None:
        with _autocast(device, precision):
            loss = _loss(model, model(audio=audio, video=video), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer_step() -> None:
        with _autocast(device, precision):
            model(audio=audio, video=video)

    model.train()
    baseline = _reset_peak(device)
    train_s = _median_seconds(train_step, device, warmup, steps)
    peak = _peak_mb(device, baseline)
    model.eval()
    infer_s = _median_seconds(infer_step, device, warmup, steps)
    rate = matmul_flops_s if matmul_flops_s is not None else matmul_rate(device, precision)
    train_flops_s = flops[(True, "runs")] * batch / train_s
    return Profile(
        fusion=fusion, preset=preset, device=str(device), precision=precision, batch=batch,
        audio_tokens=model.num_audio_tokens, video_tokens=model.num_video_tokens, params=count_params(model),
        gflops_fwd=flops[(False, "runs")] / 1e9, gflops_fwd_bwd=flops[(True, "runs")] / 1e9,
        dense_gflops_fwd=flops[(False, "dense")] / 1e9, dense_gflops_fwd_bwd=flops[(True, "dense")] / 1e9,
        effective_gflops_fwd=flops[(False, "effective")] / 1e9,
        effective_gflops_fwd_bwd=flops[(True, "effective")] / 1e9,
        train_clips_s=batch / train_s, train_ms_step=train_s * 1e3, infer_clips_s=batch / infer_s,
        infer_ms_step=infer_s * 1e3, peak_mem_mb=peak, matmul_gflops_s=rate / 1e9, mfu=train_flops_s / rate,
    )


def as_row(profile: Profile) -> dict:
    return {k: v for k, v in asdict(profile).items() if k in CSV_COLUMNS}


def _fusions(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``fusion=all`` / ``fusion=a,b`` among the overrides → (fusion names, the other overrides)."""
    from fusionbench.registry import list_fusions

    names, rest = [], []
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "fusion":
            names += list_fusions() if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
        else:
            rest.append(item)
    return names, rest


def _profile_job(job: tuple) -> Profile:
    """One fusion's profile from a plain config (run in a fresh process on CPU)."""
    from fusionbench.data.features import AudioFeatures
    from fusionbench.registry import create_model

    cfg, uses_data, device, precision, batch, warmup, steps, rate = job
    cfg = OmegaConf.create(cfg)
    device = torch.device(device)
    if device.type == "cpu":
        torch.set_num_threads(int(cfg.train.threads))
    geometry = {}
    if uses_data:
        a, v = cfg.data.audio, cfg.data.video
        geometry = {"audio_shape": AudioFeatures(a).shape, "video_shape": (v.num_frames, v.size, v.size)}
    torch.manual_seed(0)
    model = create_model(cfg.fusion, 10, cfg.preset, **{**geometry, **cfg.model}).to(device)
    return profile_model(model, fusion=cfg.fusion, preset=cfg.preset, batch=batch, warmup=warmup, steps=steps,
                         precision=precision, matmul_flops_s=rate)


def run_profiles(overrides: list[str], experiment: str | None = None, *, batch: int = 8, warmup: int = 3,
                 steps: int = 10, out: str | Path | None = "results/profile.csv", log=print) -> list[Profile]:
    """Profile every fusion named by ``fusion=`` (``all``, a comma list, default the config's) at the config's preset.

    Geometry: the data config's (``data=<name>`` or any ``data.`` override: its fbank and frames), else the preset's
    own. Device: CUDA when ``train.accelerator`` allows and one is present (precision ``train.precision``), else CPU
    (float32, ``train.threads`` threads). Prints one table row per fusion and writes ``out`` (CSV).
    """
    import pandas as pd

    from fusionbench.config import load_config, project_path

    names, rest = _fusions(list(overrides))
    cfgs = [load_config(rest + ([f"fusion={n}"] if n else []), experiment) for n in (names or [None])]
    uses_data = any(item.partition("=")[0].strip().split(".")[0] == "data" for item in rest)
    cfg = cfgs[0]
    cuda = cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    precision = str(cfg.train.precision) if cuda else "32-true"
    if not cuda:
        torch.set_num_threads(int(cfg.train.threads))
    rate = matmul_rate(device, precision)
    log(f"[profile] {device} {precision}: matmul {rate / 1e9:.1f} GFLOP/s; batch {batch}, {steps} timed steps "
        f"after {warmup}")
    profiles = []
    for cfg in cfgs:
        job = (OmegaConf.to_container(cfg), uses_data, str(device), precision, batch, warmup, steps, rate)
        if device.type == "cpu":  # a fresh process each: the peak RSS growth is then this model's alone
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                p = pool.submit(_profile_job, job).result()
        else:
            p = _profile_job(job)
        profiles.append(p)
        log(f"[profile] {p.fusion:<13} {p.params:>11,} params  {p.gflops_fwd:9.4g} GFLOPs fwd "
            f"(dense {p.dense_gflops_fwd:.4g}, effective {p.effective_gflops_fwd:.4g})  {p.gflops_fwd_bwd:9.4g} fwd+bwd  "
            f"train {p.train_clips_s:8.1f} clips/s ({p.train_ms_step:.1f} ms)  infer {p.infer_clips_s:8.1f} clips/s  "
            f"peak {p.peak_mem_mb:,.1f} MiB  MFU {p.mfu:.1%}")
    if out:
        path = project_path(str(out))
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([as_row(p) for p in profiles], columns=list(CSV_COLUMNS)).to_csv(path, index=False)
        log(f"[profile] wrote {path}")
    return profiles
