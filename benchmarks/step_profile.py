"""Where a small-preset training step's time goes, per fusion, and the optimiser before/after.

For each fusion at the small preset (the default benchmark's batch 32, one torch thread, the synthetic clip shape):

- ``ms_step`` split into ``forward``, ``backward`` and ``optimizer`` (AdamW ``step`` + ``zero_grad``), each the median
  over ``--steps`` timed steps without the profiler, the fusions alternating within each repeat (they share the
  machine's load);
- ``mfu``: FLOPs of forward + backward (``FlopCounterMode``) / fwd + bwd time / the fp32 matmul rate measured in the
  same run (``profile.matmul_rate``);
- from one ``torch.profiler`` pass over 5 forward + backward passes: ``aten_ops`` per step, and the share of the
  operators' self time in matmuls (``mm``, ``addmm``, ``bmm``), attention kernels (``scaled_dot_product`` and its
  backward), layer norms, and everything else (element-wise, copies, reductions); ``overhead`` = 1 - the operators'
  self time / the profiled wall time: Python, autograd and dispatch outside any operator (the profiler adds its own
  per-op cost, so this reads high);
- ``optimizer_loop_ms`` / ``optimizer_fused_ms``: the optimiser step of torch's default AdamW on CPU (a for-loop over
  the parameters) and the fused one the training task uses (``tasks/classify.adamw_warmup_cosine``), both on the same
  gradients; ``step_loop_ms``: the whole step with the for-loop (the "before"; ``ms_step`` is the "after").

fusionbench's choice: its own loop on random inputs, not Lightning's (whose per-step hooks and logging add a fixed
cost that ``fusionbench profile`` includes).

    .venv/bin/python benchmarks/step_profile.py [--fusions all] [--batch 32] [--steps 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusionbench.evaluate.profile import matmul_rate  # noqa: E402
from fusionbench.registry import create_model, list_fusions  # noqa: E402

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm")
NORM = ("aten::native_layer_norm", "aten::native_layer_norm_backward")


class Stepper:
    """One fusion's model, inputs and two AdamWs (for-loop and fused) over the same parameters."""

    def __init__(self, name: str, batch: int) -> None:
        torch.manual_seed(0)
        self.model = create_model(name, 10, "small").train()
        tok = self.model.tokenizer
        self.audio = torch.randn(batch, 1, *tok.audio.audio_shape)
        self.video = torch.randn(batch, 3, *tok.video.video_shape)
        self.target = torch.randint(10, (batch,))
        params = list(self.model.parameters())
        self.opt = {"fused": torch.optim.AdamW(params, lr=1e-4, fused=True),
                    "loop": torch.optim.AdamW(params, lr=1e-4, foreach=False)}

    def loss(self) -> torch.Tensor:
        return self.model.loss(self.model(audio=self.audio, video=self.video), self.target, F.cross_entropy)

    def step(self, opt: str = "fused") -> tuple[float, float, float]:
        """(forward, backward, optimiser) seconds of one training step."""
        t0 = time.perf_counter()
        loss = self.loss()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt[opt].step()
        self.opt[opt].zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def fwd_bwd_flops(self) -> float:
        counter = FlopCounterMode(display=False)
        with counter:
            self.loss().backward()
        self.model.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())

    def op_shares(self, passes: int = 5) -> dict[str, float]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(passes):
                self.loss().backward()
            wall = time.perf_counter() - start
        self.model.zero_grad(set_to_none=True)
        rows = prof.key_averages()
        self_us = {r.key: r.self_cpu_time_total for r in rows}
        calls = sum(r.count for r in rows if r.key.startswith("aten::"))
        total = sum(self_us.values())
        share = lambda keys: sum(v for k, v in self_us.items() if keys(k)) / total  # noqa: E731
        matmul = share(lambda k: k in MATMUL)
        attention = share(lambda k: "scaled_dot_product" in k)
        norm = share(lambda k: k in NORM)
        return dict(aten_ops=calls / passes, matmul=matmul, attention=attention, layer_norm=norm,
                    other_ops=1 - matmul - attention - norm, overhead=max(0.0, 1 - total / 1e6 / wall))


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fusions", default="all")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "results" / "step_profile.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list_fusions() if args.fusions == "all" else args.fusions.split(",")
    rate = matmul_rate(torch.device("cpu"))
    print(f"[step] torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"fp32 matmul {rate / 1e9:.0f} GFLOP/s", flush=True)
    steppers = {n: Stepper(n, args.batch) for n in names}
    for s in steppers.values():
        for opt in ("fused", "loop", "fused"):  # warm-up, both optimisers' state allocated
            s.step(opt)
    times = {(n, opt): [] for n in names for opt in ("fused", "loop")}
    for _ in range(args.steps):  # the fusions and the two optimisers alternate within each repeat
        for n, s in steppers.items():
            for opt in ("fused", "loop"):
                times[n, opt].append(s.step(opt))
    rows = []
    for n, s in steppers.items():
        fwd, bwd, opt = (statistics.median(t[i] for t in times[n, "fused"]) for i in range(3))
        loop_opt = statistics.median(t[2] for t in times[n, "loop"])
        loop_step = statistics.median(sum(t) for t in times[n, "loop"])
        fused_step = statistics.median(sum(t) for t in times[n, "fused"])
        row = dict(fusion=n, batch=args.batch, ms_step=fused_step * 1e3, forward_ms=fwd * 1e3, backward_ms=bwd * 1e3,
                   optimizer_ms=opt * 1e3, mfu=s.fwd_bwd_flops() / (fwd + bwd) / rate, **s.op_shares(),
                   optimizer_loop_ms=loop_opt * 1e3, optimizer_fused_ms=opt * 1e3, step_loop_ms=loop_step * 1e3)
        rows.append(row)
        print(f"[step] {n:<13} {row['ms_step']:6.1f} ms (fwd {row['forward_ms']:.1f}, bwd {row['backward_ms']:.1f}, "
              f"opt {row['optimizer_ms']:.1f}; for-loop AdamW {row['optimizer_loop_ms']:.1f} → step "
              f"{row['step_loop_ms']:.1f}), MFU {row['mfu']:.1%}, {row['aten_ops']:.0f} ops; matmul {row['matmul']:.0%}"
              f", attention {row['attention']:.0%}, norm {row['layer_norm']:.0%}, other {row['other_ops']:.0%}, "
              f"outside ops {row['overhead']:.0%}", flush=True)
    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.4g")
    print(frame.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"[step] wrote {out}")


if __name__ == "__main__":
    main()
