"""Cost against sequence length, per fusion: FLOPs (counted) and forward time (measured where cheap).

Every fusion at the small preset's width and depth (D = 64, 4 layers, 4 heads), with N audio + N video tokens = 64 …
4096 (N_a = N_v; the tokenizer's patches shrunk to audio 8 × 2, video 1 × 4 × 4, so the patch projection stays a
small, linear term). Per (fusion, tokens), batch 1, forward:

- ``gflops``: the whole model, counted by ``FlopCounterMode`` as ``profile.count_flops`` counts it (without its
  masked-pair count, which needs the mask's values), on the meta device (shapes only: the largest cases never
  allocate);
- ``attn_gflops``: the attention core, 4 · h · N_q · N_k · d_h per ``scaled_dot_product_attention`` call (QKᵀ and AV,
  2 FLOPs per MAC; the FlopCounterMode formula), the term that grows with the square of the sequence;
- ``fusion_gflops``: DeepAVFusion's fusion blocks alone (``model.fusion.<layer>``, FlopCounterMode's per-module counts): the
  interaction whose dense form grows with N_v · N_a;
- ``ms``: the median forward time on CPU (one thread, after a warm-up) where the model's FLOPs are under
  ``--time-below`` GFLOPs, else empty.

Zorro is counted on the path ``forward`` takes (structured from ``STRUCTURED_MIN_TOKENS`` up) and, as
``zorro_masked``, on the dense masked reference; DeepAVFusion with its default factorized block and with
``fusion_block=dense``. Writes results/scaling.csv and results/scaling.png.

    .venv/bin/python benchmarks/scaling.py [--tokens 64,128,...,4096] [--time-below 1.5]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusionbench.registry import create_model  # noqa: E402

TOKENS = (64, 128, 256, 512, 1024, 2048, 4096)  # N_a + N_v
VARIANTS = {  # name → (fusion, model overrides, dense: count the masked reference)
    "late": ("late", {}, False),
    "early": ("early", {}, False),
    "mid": ("mid", {}, False),
    "mbt": ("mbt", {}, False),
    "zorro": ("zorro", {}, False),
    "zorro_masked": ("zorro", {}, True),
    "deepavfusion": ("deepavfusion", {}, False),
    "deepavfusion_dense": ("deepavfusion", {"fusion_block": "dense"}, False),
}
COLUMNS = ("variant", "fusion", "audio_tokens", "video_tokens", "tokens", "gflops", "attn_gflops", "fusion_gflops",
           "ms")


class AttentionFlops(TorchFunctionMode):
    """Sums 4 · N_q · N_k · d_h over the batch and heads of every ``F.scaled_dot_product_attention`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            self.flops += 4 * q.numel() * k.shape[-2]  # q: (B, h, N_q, d_h); k: (B, h, N_k, d_h)
        return func(*args, **kwargs)


def build(variant: str, n_a: int, n_v: int, device: str) -> torch.nn.Module:
    fusion, overrides, _ = VARIANTS[variant]
    with torch.device(device):
        torch.manual_seed(0)
        model = create_model(fusion, 10, "small", audio_shape=(8, 2 * n_a), audio_patch=(8, 2),
                             video_shape=(n_v, 4, 4), video_patch=(1, 4, 4), **overrides)
    return model.eval()


def inputs(model, device: str) -> dict[str, torch.Tensor]:
    audio = torch.randn(1, 1, *model.tokenizer.audio.audio_shape, device=device)  # (1, 1, n_mels, L)
    video = torch.randn(1, 3, *model.tokenizer.video.video_shape, device=device)  # (1, 3, T, H, W)
    return {"audio": audio, "video": video}


def measure(variant: str, tokens: int, time_below: float) -> dict:
    fusion, _, dense = VARIANTS[variant]
    n_a, n_v = tokens // 2, tokens - tokens // 2
    model = build(variant, n_a, n_v, "meta")
    forward = model.forward_masked if dense else model
    attn, counter = AttentionFlops(), FlopCounterMode(display=False)
    with attn, counter, torch.no_grad():
        forward(**inputs(model, "meta"))
    total = counter.get_total_flops()
    per_module = counter.get_flop_counts()
    blocks = re.compile(rf"{type(model).__name__}\.fusion\.\d+")  # each fusion block (the ModuleDict is never called)
    fusion_flops = (sum(sum(ops.values()) for name, ops in per_module.items() if blocks.fullmatch(name))
                    if fusion == "deepavfusion" else float("nan"))
    ms = float("nan")
    if total / 1e9 < time_below:
        model = build(variant, n_a, n_v, "cpu")
        forward = model.forward_masked if dense else model
        x = inputs(model, "cpu")
        times = []
        with torch.no_grad():
            forward(**x)
            for _ in range(5):
                start = time.perf_counter()
                forward(**x)
                times.append(time.perf_counter() - start)
        ms = statistics.median(times) * 1e3
    return dict(variant=variant, fusion=fusion, audio_tokens=n_a, video_tokens=n_v, tokens=tokens,
                gflops=total / 1e9, attn_gflops=attn.flops / 1e9, fusion_gflops=fusion_flops / 1e9, ms=ms)


def plot(frame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("gflops", "model GFLOPs (forward, per clip)"), ("attn_gflops", "attention-core GFLOPs"),
              ("fusion_gflops", "DeepAVFusion fusion-block GFLOPs"), ("ms", "forward ms (CPU, 1 thread, measured)")]
    colors = {v: plt.cm.tab10(i) for i, v in enumerate(VARIANTS)}  # one colour per variant on every panel
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (column, title) in zip(axes.flat, panels):
        for variant, rows in frame.groupby("variant", sort=False):
            rows = rows.dropna(subset=[column])
            if len(rows) and (rows[column] > 0).any():
                ax.plot(rows.tokens, rows[column], marker="o", ms=3, label=variant, color=colors[variant],
                        ls="--" if variant.endswith(("_masked", "_dense")) else "-")
        ax.set(xscale="log", yscale="log", title=title, xlabel="audio + video tokens")
        ax.set_xticks(list(TOKENS), [str(t) for t in TOKENS])
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("fusionbench cost scaling (small preset: D=64, 4 layers; batch 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma list of N_a + N_v")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of: {', '.join(VARIANTS)}")
    p.add_argument("--time-below", type=float, default=1.5, help="time the forward where the GFLOPs are below this")
    p.add_argument("--out", default=str(ROOT / "results" / "scaling.csv"))
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    tokens = [int(t) for t in args.tokens.split(",")]
    torch.set_num_threads(1)
    rows = []
    for variant in variants:
        for t in tokens:
            r = measure(variant, t, args.time_below)
            rows.append(r)
            print(f"[scaling] {variant:<19} {t:>5} tokens  {r['gflops']:9.4g} GFLOPs  attention {r['attn_gflops']:9.4g}"
                  f"  fusion {r['fusion_gflops']:9.4g}  {r['ms']:8.2f} ms", flush=True)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.5g")
    plot(frame, out.with_suffix(".png"))
    wide = frame.pivot(index="tokens", columns="variant", values="attn_gflops")[variants]
    print("attention-core GFLOPs (rows: audio + video tokens)")
    print(wide.to_string(float_format=lambda x: f"{x:.3g}"))
    print(f"[scaling] wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
