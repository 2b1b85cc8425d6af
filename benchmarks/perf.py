"""Performance ratios, measured in one run: Zorro's routing, DeepAVFusion's interactions, the data path.

Rows (each a candidate against a baseline; speedup = baseline time / candidate time, flop_limit = baseline FLOPs /
candidate FLOPs of one step by ``FlopCounterMode``: the speedup the arithmetic allows; mem = candidate peak / baseline
peak). A run with ``--only`` replaces its benchmarks' rows in ``--out`` and keeps the other rows.

- ``zorro_sdpa``: the attention core alone (q, k, v given; forward + backward; ``_fwd``: forward), where the
  routing's limit is 2× (it skips half the query-key pairs at 2 × N ≫ 16): ``zorro.routed_sdpa`` vs one
  ``scaled_dot_product_attention`` call with ``zorro_mask``.
- ``zorro_attn``: one attention layer (LayerNorm + attention, forward + backward; ``zorro_attn_fwd``: forward only)
  over [A | V | F] with N audio, N video and 16 fusion tokens, N = 16 (48 tokens: the small preset's count), 256, 512,
  1024; widths 64 and 256, 4 heads. ``structured``: ``zorro.routed_attention`` (A reads A, V reads V, F reads all;
  no masked pairs); ``masked``: the same ``Attention`` over all tokens with ``zorro_mask``; ``lucidrains``:
  ``zorro_pytorch.Attention`` (its einsum + ``masked_fill`` attention) with the same mask, from ``--zorro-ref``.
- ``zorro_model``: a whole Zorro training step (forward + mean readout loss + backward + AdamW) at the small preset's
  depth (4) and MLP ratio, ``forward_structured`` vs ``forward_masked``; the tokenizer's patches are shrunk (audio
  8 × 2, video 1 × 4 × 4) so that N tokens per modality cost little to embed. Also at N = 32, 64, 96, 128 (time
  only): the sweep that sets ``Zorro.STRUCTURED_MIN_TOKENS``, the sequence length from which ``forward`` takes the
  structured path. At N = 1024 the step runs on a quarter of the batch (``B=2``), to keep the run in minutes.
- ``dav_block``: one DeepAVFusion fusion block (``nn/fusion_blocks.py``) at N_v × N_a = 196 × 96, width 256, 4 heads,
  fusion tokens (16, 8, 8), attn_ratio 0.25, MLP ratio 1: factorized vs dense, forward + backward (``dav_block_fwd``:
  forward); and against stoneMo/DeepAVFusion's ``FusionBlock_DenseAVInteractions`` /
  ``FusionBlock_FactorizedAVInteractions`` (``--deepavfusion-ref``; qkv_bias on, as ours).
- ``data_epoch``: an epoch of the train split of a generated synthetic set (``--clips``, default 96, 16 × 32² frames,
  2 s): one pass of the train loader (normalisation, SpecAugment, collate) over the split read from the prepared
  store, vs decoding the same clips from their mp4s (``datamodule.decode_split``: PyAV decode + fbank, one process),
  which a loader without the store would do every epoch. ``data_setup``: the once-per-run cost of a fresh
  ``AVDataModule`` reading every split from the store (manifest, fingerprints, normalisation), against the same
  decode.
- ``data_wait``: the fraction of a training step (the small-preset ``mbt`` on that set, the config's loader, batch 8)
  spent in ``next(loader)``; fusionbench's own loop, not Lightning's; three epochs, after a warm-up epoch.

Threads: one by default (``--threads``). The project's machine is shared (2 cores, several agents): with two
OpenMP threads on a loaded machine every op waits at a barrier for the slower core and a step takes 10-200× its
quiet time, a wait that dominates the small cases; one thread measures the work, and the ratios, not the barrier.
Time: the variants of one row alternate within each repeat (they share the machine's load); each variant's median over
the steps that fill ``--budget`` seconds (at least 3) after a warm-up step. Peak memory: the exact peak of torch's CPU
allocations over one step after a warm-up step (``evaluate/allocated.py``, the profiler's memory timeline; not the
RSS, which depends on what the heap already had free): training rows count activations and gradients (the weights
and the optimiser's state were made before).
The reference code is read from a local checkout (a user clones it; it is never part of fusionbench); a row whose
checkout is not given is skipped, saying so. zorro-pytorch needs ``einops`` and ``beartype``; DeepAVFusion's block
file imports ``timm``'s ``DropPath`` and ``Mlp``: where timm is not installed, a stand-in with timm's definitions of the
two is used (said in the row's note).

    .venv/bin/python benchmarks/perf.py [--zorro-ref PATH] [--deepavfusion-ref PATH] [--budget 3] [--quick]
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fusionbench.evaluate.efficiency  # noqa: E402,F401  registers the FLOP formulas of CPU attention
from fusionbench.evaluate.allocated import allocated_peak_mib  # noqa: E402
from fusionbench.fusions.zorro import routed_attention, routed_sdpa, zorro_mask  # noqa: E402
from fusionbench.nn.block import Attention  # noqa: E402
from fusionbench.nn.fusion_blocks import FusionBlock  # noqa: E402
from fusionbench.nn.masks import TokenType, token_types  # noqa: E402

A, V, FU = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION
ZORRO_TOKENS = (16, 256, 512, 1024)  # per modality; + 16 fusion tokens
CROSSOVER_TOKENS = (32, 64, 96, 128)  # zorro_model only: where the structured path starts to pay (STRUCTURED_MIN_TOKENS)
WIDTHS = (64, 256)
HEADS = 4
NUM_FUSION = 16
DAV = dict(n_v=196, n_a=96, width=256, heads=4, tokens=(16, 8, 8), attn_ratio=0.25, mlp_ratio=1.0)
COLUMNS = ("benchmark", "setting", "candidate", "baseline", "candidate_ms", "baseline_ms", "speedup", "flop_limit",
           "candidate_peak_mb", "baseline_peak_mb", "mem_ratio", "note")
Step = Callable[[], None]


# ------------------------------------------------------------------------------------------ reference code


def _import_reference(path: str, module: str) -> types.ModuleType:
    """Import ``module`` from a local checkout at ``path`` (the checkout's own code, unchanged)."""
    from fusionbench._torchaudio import import_torchaudio

    import_torchaudio()  # zorro-pytorch imports torchaudio's Spectrogram; CPU torch needs the shim
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(module)


def timm_stand_in() -> bool:
    """Install a stand-in ``timm.models.vision_transformer`` (timm's ``DropPath`` and ``Mlp``, as timm defines them)
    when timm cannot be imported; returns whether it did."""
    try:
        import timm.models.vision_transformer  # noqa: F401

        return False
    except ImportError:
        pass
    from fusionbench.nn.block import DropPath

    class Mlp(nn.Module):  # timm.layers.Mlp: fc1 → act → drop → (norm: identity) → fc2 → drop
        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0, **_):
            super().__init__()
            hidden_features, out_features = hidden_features or in_features, out_features or in_features
            self.fc1, self.act, self.drop1 = nn.Linear(in_features, hidden_features), act_layer(), nn.Dropout(drop)
            self.fc2, self.drop2 = nn.Linear(hidden_features, out_features), nn.Dropout(drop)

        def forward(self, x):
            return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))

    vit = types.ModuleType("timm.models.vision_transformer")
    vit.DropPath, vit.Mlp = DropPath, Mlp
    for name, mod in (("timm", types.ModuleType("timm")), ("timm.models", types.ModuleType("timm.models")),
                      ("timm.models.vision_transformer", vit)):
        sys.modules.setdefault(name, mod)
    return True


# ------------------------------------------------------------------------------------------ the cases


def _drop_grads(params) -> None:
    for p in params:
        p.grad = None


def zorro_attention(variant: str, n: int, width: int, batch: int, refs: dict, train: bool = True) -> Step:
    """One attention layer over [A (n) | V (n) | F (16)] by ``variant``: structured | masked | lucidrains."""
    torch.manual_seed(0)
    sizes = {A: n, V: n, FU: NUM_FUSION}
    x = torch.randn(batch, sum(sizes.values()), width, requires_grad=train)  # (B, N, D)
    types_ = token_types(*sizes.items())
    mask = zorro_mask(types_, types_)  # (N, N)
    if variant == "lucidrains":
        mod = _import_reference(refs["zorro"], "zorro_pytorch.zorro_pytorch")
        layer = mod.Attention(width, dim_head=width // HEADS, heads=HEADS)  # LayerNorm inside

        def run() -> torch.Tensor:
            return layer(x, attn_mask=mask)
    else:
        norm, attn = nn.LayerNorm(width), Attention(width, HEADS)
        layer = nn.ModuleList([norm, attn])
        if variant == "structured":
            def run() -> torch.Tensor:
                return routed_attention(attn, norm(x), sizes)  # (B, N, D)
        else:
            def run() -> torch.Tensor:
                return attn(norm(x), mask=mask)  # (B, N, D)
    params = list(layer.parameters())

    def step() -> None:
        if train:
            run().sum().backward()
            _drop_grads(params + [x])
        else:
            with torch.no_grad():
                run()
    return step


def zorro_sdpa(variant: str, n: int, width: int, batch: int, refs: dict, train: bool = True) -> Step:
    """The attention core alone (q, k, v given) over [A | V | F]: ``routed_sdpa`` vs one masked sdpa call."""
    torch.manual_seed(0)
    sizes = {A: n, V: n, FU: NUM_FUSION}
    shape = (batch, HEADS, sum(sizes.values()), width // HEADS)
    q, k, v = (torch.randn(shape, requires_grad=train) for _ in range(3))  # each (B, h, N, d_h)
    types_ = token_types(*sizes.items())
    mask = zorro_mask(types_, types_)  # (N, N)
    if variant == "structured":
        def run() -> torch.Tensor:
            return torch.cat(list(routed_sdpa(q, k, v, sizes).values()), dim=2)  # (B, h, N, d_h)
    else:
        def run() -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, N, d_h)

    def step() -> None:
        if train:
            run().sum().backward()
            _drop_grads([q, k, v])
        else:
            with torch.no_grad():
                run()
    return step


def zorro_model(variant: str, n: int, width: int, batch: int, refs: dict, train: bool = True) -> Step:
    """A whole Zorro training step (small preset depth; n tokens per modality) by ``forward_<variant>``."""
    from fusionbench.registry import create_model

    torch.manual_seed(0)
    model = create_model("zorro", 10, "small", dim=width, heads=HEADS, audio_shape=(8, 2 * n), audio_patch=(8, 2),
                         video_shape=(n, 4, 4), video_patch=(1, 4, 4)).train()
    assert model.num_audio_tokens == model.num_video_tokens == n
    audio, video = torch.randn(batch, 1, 8, 2 * n), torch.randn(batch, 3, n, 4, 4)
    target = torch.randint(10, (batch,))
    forward = getattr(model, f"forward_{variant}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.loss(forward(audio=audio, video=video), target, F.cross_entropy).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def dav_block(variant: str, n: int, width: int, batch: int, refs: dict, train: bool = True) -> Step:
    """One DeepAVFusion fusion block at N_v × N_a (``DAV``): ours_<kind> | ref_<kind>, kind dense | factorized."""
    torch.manual_seed(0)
    origin, kind = variant.split("_")
    d = DAV
    if origin == "ours":
        block = FusionBlock(kind, width, d["heads"], d["tokens"], d["attn_ratio"], d["mlp_ratio"])
    else:
        timm_stand_in()
        mod = _import_reference(refs["deepavfusion"], "models.fusion_blocks")
        common = dict(dim=width, num_heads=d["heads"], attn_ratio=d["attn_ratio"], mlp_ratio=d["mlp_ratio"],
                      qkv_bias=True)
        block = (mod.FusionBlock_DenseAVInteractions(**common) if kind == "dense"
                 else mod.FusionBlock_FactorizedAVInteractions(**common, fusion_tkns=d["tokens"]))
    f = torch.randn(batch, sum(d["tokens"]), width, requires_grad=train)  # (B, ΣF, D)
    xv = torch.randn(batch, d["n_v"], width, requires_grad=train)  # (B, N_v, D)
    xa = torch.randn(batch, d["n_a"], width, requires_grad=train)  # (B, N_a, D)
    params = list(block.parameters()) + [f, xv, xa]

    def step() -> None:
        if train:
            block(f, xv, xa).sum().backward()
            _drop_grads(params)
        else:
            with torch.no_grad():
                block(f, xv, xa)
    return step


CASES = {"zorro_sdpa": zorro_sdpa, "zorro_attn": zorro_attention, "zorro_model": zorro_model, "dav_block": dav_block}


# ------------------------------------------------------------------------------------------ measuring


def peak_mib(case: str, variant: str, n: int, width: int, batch: int, refs: dict, train: bool = True) -> float:
    """The exact allocation peak (MiB) of one step of ``CASES[case]``, after a warm-up step, at one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the attention kernels' buffers are per thread
    try:
        step = CASES[case](variant, n, width, batch, refs, train)
        step()  # warm: one-off allocations (the optimiser's state) are not the step's
        return allocated_peak_mib(step)
    finally:
        torch.set_num_threads(threads)


MIN_REPEATS, MAX_REPEATS = 3, 60
BUDGET_S = 3.0  # each variant is timed for about this long: fast steps repeat more, slow ones at least MIN_REPEATS


def time_variants(steps: dict[str, Step], budget_s: float = BUDGET_S) -> dict[str, float]:
    """Median ms per variant; the variants alternate within each repeat, after one warm-up step each; the repeats
    fill about ``budget_s`` per variant (between ``MIN_REPEATS`` and ``MAX_REPEATS``)."""
    longest = 0.0
    for step in steps.values():
        start = time.perf_counter()
        step()
        longest = max(longest, time.perf_counter() - start)
    repeats = max(MIN_REPEATS, min(MAX_REPEATS, int(budget_s / max(longest, 1e-6))))
    times: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(repeats):
        for v, step in steps.items():
            start = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - start)
    return {v: statistics.median(t) * 1e3 for v, t in times.items()}


def step_flops(step: Step) -> float:
    """FLOPs of one call of ``step`` counted by ``FlopCounterMode`` (matmuls and attention; a masked attention counts
    every pair, as it computes them; the optimiser and element-wise ops count nothing)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def row(benchmark: str, setting: str, cand: str, base: str, ms: dict, mem: dict, note: str = "",
        flops: dict | None = None) -> dict:
    out = dict(benchmark=benchmark, setting=setting, candidate=cand, baseline=base, candidate_ms=ms[cand],
               baseline_ms=ms[base], speedup=ms[base] / ms[cand], note=note)
    if flops and flops.get(cand) and flops.get(base):
        out["flop_limit"] = flops[base] / flops[cand]  # the speedup the FLOPs allow: baseline / candidate FLOPs
    if cand in mem and base in mem:
        out.update(candidate_peak_mb=mem[cand], baseline_peak_mb=mem[base],
                   mem_ratio=mem[cand] / mem[base] if mem[base] > 0 else float("nan"))
    return out


def run_case(case: str, variants: list[str], n: int, width: int, batch: int, refs: dict, budget_s: float,
             memory: bool, train: bool = True) -> tuple[dict, dict, dict]:
    """(median ms, peak MiB (empty without ``memory``), FLOPs of one step) per variant."""
    steps = {v: CASES[case](v, n, width, batch, refs, train) for v in variants}
    ms = time_variants(steps, budget_s)
    flops = {v: step_flops(step) for v, step in steps.items()}
    del steps
    mem = {v: peak_mib(case, v, n, width, batch, refs, train) for v in variants} if memory else {}
    return ms, mem, flops


# ------------------------------------------------------------------------------------------ the data path


def data_rows(scratch: Path, clips: int, batch: int, log: Callable[[str], None]) -> list[dict]:
    from omegaconf import OmegaConf

    from fusionbench.config import DataConfig
    from fusionbench.data.datamodule import AVDataModule, decode_split

    cfg = OmegaConf.structured(DataConfig)
    cfg.root, cfg.cache_dir = str(scratch / "data"), str(scratch / "cache")
    cfg.synth.num_clips, cfg.batch_size = clips, batch
    first = AVDataModule(cfg, decode_workers=2)
    first.prepare_data()  # generates the set once
    first.setup()  # prepares the store once
    members = [(r, c) for r, c in enumerate(first.clips) if c.split == "train"]

    def store_epoch() -> None:  # one pass of the train loader over the split read from the store
        for _ in first.train_dataloader():
            pass

    def decoded_epoch() -> None:  # the same clips decoded from their mp4s (decode + fbank), one process
        decode_split(members, decode_kwargs=first._decode_kwargs(), audio=first.audio_features, workers=1)

    def store_setup() -> None:  # once per run: a fresh module reads every split from the store
        dm = AVDataModule(cfg, decode_workers=1)
        dm.setup()
        assert dm.decode_count == 0, "the store should have served every split"

    ms = time_variants({"store": store_epoch, "decode_mp4": decoded_epoch, "store_setup": store_setup})
    setting = f"{len(members)} train clips, {cfg.video.num_frames}x{cfg.video.size}² frames, {cfg.clip_seconds:g} s"
    out = [row("data_epoch", setting, "store", "decode_mp4", ms, {}, "an epoch: the train loader's pass over the "
               "store vs decoding the mp4s"),
           row("data_setup", f"{len(first.clips)} clips, every split", "store_setup", "decode_mp4", ms, {},
               "once per run: a fresh datamodule reading every split from the store (manifest, fingerprints, "
               "normalisation) vs decoding the train split")]

    for workers in (0, 1):  # the config's default (in the training process), and one loader worker
        first.cfg.num_workers = workers
        wait, total, steps = data_wait(first, batch)
        note = f"wait fraction {wait / total:.3f} over {steps} steps; num_workers={workers}"
        log(f"[perf] data_wait: {note}")
        out.append(dict(benchmark="data_wait", setting=f"mbt small, batch {batch}, num_workers={workers}",
                        candidate="next(loader)", baseline="whole step", candidate_ms=wait / steps * 1e3,
                        baseline_ms=total / steps * 1e3, speedup=float("nan"), note=note))
    return out


def data_wait(dm, batch: int) -> tuple[float, float, int]:
    """(seconds in ``next(loader)``, seconds of whole steps, steps) of the small-preset ``mbt`` training on ``dm``'s
    train loader: three epochs after a warm-up epoch (which also starts a worker)."""
    from fusionbench.registry import create_model

    torch.manual_seed(0)
    model = create_model("mbt", dm.num_classes, "small", audio_shape=dm.audio_shape,
                         video_shape=dm.video_shape).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = dm.train_dataloader()
    wait = total = 0.0
    steps = 0
    for epoch in range(4):  # epoch 0 warms up; the wait is measured over the next three
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                b = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            model.loss(model(audio=b["audio"], video=b["video"]), b["label"], F.cross_entropy).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if epoch:
                wait, total, steps = wait + t1 - t0, total + time.perf_counter() - t0, steps + 1
    return wait, total, steps


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> list[dict]:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zorro-ref", help="a local checkout of lucidrains/zorro-pytorch")
    p.add_argument("--deepavfusion-ref", help="a local checkout of stoneMo/DeepAVFusion")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds of timed steps per variant and row")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: see the docstring)")
    p.add_argument("--clips", type=int, default=96, help="clips of the generated synthetic set (data rows)")
    p.add_argument("--scratch", help="where the synthetic set and its store go (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="48 and 2×256 tokens only, 1 s budget, no memory")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--only", default="zorro_sdpa,zorro_attn,zorro_model,dav_block,data", help="comma list of benchmarks")
    p.add_argument("--out", default=str(ROOT / "results" / "perf.csv"))
    args = p.parse_args(argv)
    only = set(args.only.split(","))
    tokens = ZORRO_TOKENS[:2] if args.quick else ZORRO_TOKENS
    budget = 1.0 if args.quick else args.budget  # seconds of timed steps per variant
    memory = not (args.quick or args.no_memory)
    torch.set_num_threads(args.threads)
    refs = {"zorro": args.zorro_ref, "deepavfusion": args.deepavfusion_ref}
    for key, flag in (("zorro", "--zorro-ref"), ("deepavfusion", "--deepavfusion-ref")):
        if refs[key] and not Path(refs[key]).is_dir():
            p.error(f"{flag} {refs[key]!r} is not a folder")
        if not refs[key]:
            print(f"[perf] {flag} not given: the {key} reference rows are skipped")
    print(f"[perf] torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of the steps in {budget:g} s per variant (≥ {MIN_REPEATS}), memory {'on' if memory else 'off'}")
    rows: list[dict] = []

    def add(r: dict) -> None:
        rows.append(r)
        mem = f"  mem {r['mem_ratio']:.2f}×" if "mem_ratio" in r else ""
        limit = f" (FLOPs allow {r['flop_limit']:.2f}×)" if "flop_limit" in r else ""
        print(f"[perf] {r['benchmark']:<14} {r['setting']:<22} {r['candidate']:>12} vs {r['baseline']:<12} "
              f"{r['candidate_ms']:9.2f} / {r['baseline_ms']:9.2f} ms  {r['speedup']:5.2f}×{limit}{mem}", flush=True)

    crossover = CROSSOVER_TOKENS if "zorro_model" in only and not args.quick else ()
    for n in sorted(tokens + crossover):
        for width in WIDTHS:
            setting = f"2x{n}+16 tok, D={width}"
            if n in crossover:  # the path-choice sweep: the whole model's step only
                ms, mem, flops = run_case("zorro_model", ["structured", "masked"], n, width, args.batch, refs,
                                          budget, False)
                add(row("zorro_model", setting, "structured", "masked", ms, mem, "path-choice sweep", flops))
                continue
            if "zorro_sdpa" in only:
                for train in (True, False):
                    ms, mem, flops = run_case("zorro_sdpa", ["structured", "masked"], n, width, args.batch, refs,
                                              budget, memory and train, train)
                    add(row("zorro_sdpa" if train else "zorro_sdpa_fwd", setting, "structured", "masked", ms, mem,
                            flops=flops))
            if "zorro_attn" in only:
                variants = ["structured", "masked"] + (["lucidrains"] if refs["zorro"] else [])
                for train in (True, False):
                    ms, mem, flops = run_case("zorro_attn", variants, n, width, args.batch, refs, budget,
                                              memory and train, train)
                    name = "zorro_attn" if train else "zorro_attn_fwd"
                    add(row(name, setting, "structured", "masked", ms, mem, flops=flops))
                    if refs["zorro"]:
                        add(row(name, setting, "structured", "lucidrains", ms, mem, flops=flops))
                        add(row(name, setting, "masked", "lucidrains", ms, mem, flops=flops))
            if "zorro_model" in only:
                batch = args.batch if n <= 512 else max(1, args.batch // 4)  # keeps the default run in minutes
                ms, mem, flops = run_case("zorro_model", ["structured", "masked"], n, width, batch, refs, budget,
                                          memory)
                add(row("zorro_model", setting + ("" if batch == args.batch else f", B={batch}"), "structured",
                        "masked", ms, mem, flops=flops))
    if "dav_block" in only:
        setting = f"{DAV['n_v']}x{DAV['n_a']} tok, D={DAV['width']}"
        variants = ["ours_factorized", "ours_dense"] + (["ref_factorized", "ref_dense"] if refs["deepavfusion"]
                                                        else [])
        note = "timm stand-in (DropPath, Mlp)" if refs["deepavfusion"] and timm_stand_in() else ""
        for train in (True, False):
            ms, mem, flops = run_case("dav_block", variants, 0, DAV["width"], args.batch, refs, budget,
                                      memory and train, train)
            name = "dav_block" if train else "dav_block_fwd"
            add(row(name, setting, "ours_factorized", "ours_dense", ms, mem, flops=flops))
            if refs["deepavfusion"]:
                add(row(name, setting, "ours_dense", "ref_dense", ms, mem, note, flops))
                add(row(name, setting, "ours_factorized", "ref_factorized", ms, mem, note, flops))
    if "data" in only:
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(args.scratch) if args.scratch else Path(tmp)
            for r in data_rows(scratch, args.clips, args.batch, print):
                add(r)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out = Path(args.out)
    if out.exists():  # a partial run (--only) replaces its own benchmarks' rows and keeps the others
        kept = pd.read_csv(out)
        kept = kept[~kept["benchmark"].isin(set(frame["benchmark"]))].reindex(columns=list(COLUMNS))
        frame = pd.concat([kept, frame], ignore_index=True) if len(kept) else frame
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.4g")
    print(frame.drop(columns=["note"]).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"[perf] wrote {out}")
    return rows


if __name__ == "__main__":
    main()
