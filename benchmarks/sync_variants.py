"""Can a fusion learn audio-visual synchrony on CPU? sync variants in memory, with fusionbench's own models.

How sync's recipe was found (README, "sync"); the pipeline runs it in experiments/benchmark-extended.yaml. Clips
are rendered by ``synthetic.render_clip`` (the mp4 generator's pure renderer) and featurised as the datamodule does
(Kaldi fbank 32 × 160, per-channel video normalisation by the training pool's statistics), then a fusion at the
small preset trains on a fixed pool of fresh clips with AdamW (lr 1e-3, weight decay 0.05, 10 % warm-up + cosine,
batch 32, gradient clip 1), validation on 600 clips of another seed every 250 steps. fusionbench's choice: a plain
loop in memory, not the Lightning pipeline, so that thousands of steps fit in minutes; the model, its init and its
loss are the pipeline's.

Variants (``--variant``; every one but the controls is leak-free: each modality's event positions are uniform in
both classes, circular shifts of one rhythm):

- ``sync``: today's task (2–4 flashes; aligned, or every burst ≥ 2 frames from every flash).
- ``off:0,8`` / ``off:0,8:3``: one (three) events; audio aligned, or shifted by 8 frames (circularly).
- ``seg:8:0,8``: one run of 8 consecutive frames; audio aligned, or exactly the complement.
- ``dense``: each frame an event with p 0.5; audio aligned, or shifted by 4–12 frames.
- controls: ``pos:4`` (a unimodal *temporal* label: is the 4-frame video-and-audio event in the first half?) and
  ``shape`` (a unimodal content label: shape mod 2).

All use the quiet rendering (still red object, sine tone, σ 0.03, 20 dB; ``--quiet 0``: sync's σ 0.15 / 10 dB with
nuisances) and a whole-frame flash. ``--rule`` also prints a hand-made rule's accuracy: the sign of the per-frame
correlation of audio energy and video brightness.

The recipe that makes sync learnable (README, "sync"), each part switchable to show it is needed:
``--norm feature`` (each input feature, fbank bin × frame and pixel × channel, standardised by the training pool's
mean and std, so that the tokens carry no component common to every clip; ``global``: one mean and std per modality,
per channel for video, the datamodule's rule), ``--patch-embed frozen`` and ``--pos-init-std 1``
(``model.patch_embed`` / ``model.pos_init_std``); ``--one-scene`` (one shape and one pitch in every clip, as colour
and timbre already are in the quiet rendering) speeds learning but is not needed. ``--fusions`` and ``--seeds`` train each fusion once per seed on
the same clips; the last validation top-1 of each run, and per fusion its mean with the 95 % t-interval, go to
``--out`` (CSV).

    .venv/bin/python benchmarks/sync_variants.py --variant seg:8:0,8 --fusion early --steps 8000
    .venv/bin/python benchmarks/sync_variants.py --one-scene --norm feature --patch-embed frozen --pos-init-std 1 \
        --fusions early late --seeds 0 1 2 --steps 4000 --train-clips 8000 --out results/sync_recipe.csv --append
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from fusionbench.data import synthetic as S
from fusionbench.data.features import AudioFeatures
from fusionbench.nn.tokenizers import PATCH_EMBEDS
from fusionbench.registry import create_model

T = 16  # frames per clip (the small preset's 16 + 16 time-aligned tokens)
FEATURES = AudioFeatures(SimpleNamespace(sample_rate=16000, num_mel_bins=32, frame_length_ms=25.0, frame_shift_ms=12.5,
                                         target_length=160, norm_mean=0.0, norm_std=1.0, norm_std_scale=1.0))


def draw(variant: str, seed: int, index: int, quiet: bool, one_scene: bool = False) -> S.ClipFactors:
    """Clip ``index`` of ``variant``: visual events, the audio shift that the label decides, the nuisances
    (``one_scene``: shape 0 and pitch 0 in every clip; the draws are made all the same, so the events do not change)."""
    rng = np.random.default_rng([seed, index])
    shape, pitch = int(rng.integers(4)), int(rng.integers(4))
    if one_scene:
        shape, pitch = 0, 0
    colour, timbre = list(S.COLOURS)[int(rng.integers(4))], S.TIMBRES[int(rng.integers(3))]
    lo, hi = S.OBJECT_RADIUS * 32 + 1, 32 - S.OBJECT_RADIUS * 32 - 1
    x0, y0, x1, y1 = (float(v) for v in rng.uniform(lo, hi, 4))
    if quiet:
        colour, timbre, x0, y0, x1, y1 = "red", "sine", 16.0, 16.0, 16.0, 16.0
    name, *args = variant.split(":")
    if name == "sync":
        while True:  # the generator's rule: a rhythm with no valid shift is redrawn in both classes
            events = np.sort(rng.choice(T, int(rng.integers(2, 5)), replace=False))
            shifts = S.valid_shifts(events, T, 2)
            if shifts:
                break
        label = int(rng.integers(2))
        shift = 0 if label else int(rng.choice(shifts))
    elif name == "off":
        offsets, k = [int(a) for a in args[0].split(",")], int(args[1]) if len(args) > 1 else 1
        events = np.sort(rng.choice(T, k, replace=False))
        label = int(rng.integers(len(offsets)))
        shift = offsets[label]
    elif name == "seg":
        length, offsets = int(args[0]), [int(a) for a in args[1].split(",")]
        start = int(rng.integers(T))
        events = np.sort([(start + k) % T for k in range(length)])
        label = int(rng.integers(len(offsets)))
        shift = offsets[label]
    elif name == "dense":
        while True:
            on = rng.uniform(size=T) < 0.5
            if 3 <= on.sum() <= 13:
                break
        events = np.flatnonzero(on)
        label = int(rng.integers(2))
        shift = 0 if label else int(rng.integers(4, 13))
    elif name == "pos":
        start = int(rng.integers(T))
        events = np.sort([(start + k) % T for k in range(int(args[0]))])
        label, shift = int(start < T // 2), 0
    elif name == "shape":
        events, label, shift = np.array([3]), shape % 2, 0
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    audio_events = tuple(sorted(int((e + shift) % T) for e in events))
    params = S.RenderParams(video_noise=0.03 if quiet else 0.15, audio_snr_db=20.0 if quiet else 10.0, flash="frame")
    return S.ClipFactors(
        index=index, task="sync", label=label, shape=shape, colour=colour, pitch=pitch, pitch_hz=S.PITCHES_HZ[pitch],
        timbre=timbre, x0=x0, y0=y0, x1=x1, y1=y1, events=tuple(int(e) for e in events), audio_events=audio_events,
        aligned=shift == 0, shift=shift, drop="", noise_seed=int(rng.integers(2**31)), params=params)


def render(variant: str, seed: int, n: int, quiet: bool, one_scene: bool = False
           ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(frames uint8 (n, T, 32, 32, 3), raw fbank (n, 1, 32, 160), labels (n,))."""
    frames = np.empty((n, T, 32, 32, 3), np.uint8)
    fbank = torch.empty((n, 1, 32, 160))
    labels = np.empty(n, np.int64)
    for i in range(n):
        f = draw(variant, seed, i, quiet, one_scene)
        frames[i], wave = S.render_clip(f)
        fbank[i] = FEATURES.raw(torch.from_numpy(wave))
        labels[i] = f.label
    return frames, fbank, torch.from_numpy(labels)


def rule_accuracy(frames: np.ndarray, fbank: torch.Tensor, labels: torch.Tensor) -> float:
    """The hand-made rule: the sign of Σ_t (energy_t − mean)(brightness_t − mean), thresholded at its median."""
    bright = frames.astype(np.float32).mean((2, 3, 4))  # (n, T)
    energy = fbank[:, 0].reshape(len(fbank), 32, T, 10).mean((1, 3)).numpy()  # (n, T)
    score = ((bright - bright.mean(1, keepdims=True)) * (energy - energy.mean(1, keepdims=True))).sum(1)
    pred = score > np.median(score)
    acc = float((pred == labels.numpy().astype(bool)).mean())
    return max(acc, 1 - acc)


def normaliser(fbank: torch.Tensor, frames: np.ndarray, norm: str):
    """(audio, video) input functions with statistics of the training pool's first 2,000 clips: ``global``: one mean
    and std for the fbank, per channel for the frames; ``feature``: per fbank bin × frame and per pixel × channel."""
    pool_a, pool_v = fbank[:2000], torch.from_numpy(frames[:2000]).float() / 255  # (n, 1, 32, 160), (n, T, H, W, 3)
    if norm == "feature":
        a_mean, a_std = pool_a.mean(0), pool_a.std(0).clamp_min(1e-3)  # (1, 32, 160)
        v_mean, v_std = pool_v.mean(0), pool_v.std(0).clamp_min(1e-2)  # (T, H, W, 3)
    else:
        a_mean, a_std = pool_a.mean(), pool_a.std()
        v_mean, v_std = pool_v.mean((0, 1, 2, 3)), pool_v.std((0, 1, 2, 3))  # (3,) per channel

    def audio(x: torch.Tensor) -> torch.Tensor:
        return (x - a_mean) / a_std  # (B, 1, 32, 160)

    def video(x: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(x).float() / 255 - v_mean) / v_std).permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, T, H, W)
    return audio, video


def train_one(args, fusion: str, seed: int, data: tuple, inputs: tuple) -> float:
    """Train ``fusion`` from seed ``seed``; prints validation top-1 every 250 steps; returns the last one."""
    frames, fbank, labels, val_frames, val_fbank, val_labels = data
    audio, video = inputs
    torch.manual_seed(seed)
    model = create_model(fusion, int(labels.max()) + 1, "small", patch_embed=args.patch_embed,
                         pos_init_std=args.pos_init_std)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.05)
    warmup = int(0.1 * args.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                              0.5 * (1 + math.cos(math.pi * (s - warmup) / (args.steps - warmup))))
    val_audio, val_video = audio(val_fbank), video(val_frames)
    g = torch.Generator().manual_seed(seed)
    step, losses, start, acc = 0, [], time.time(), float("nan")
    while step < args.steps:
        for idx in torch.randperm(args.train_clips, generator=g).split(32):
            if len(idx) < 32 or step >= args.steps:
                continue
            model.train()
            out = model(audio=audio(fbank[idx]), video=video(frames[idx.numpy()]))
            loss = model.loss(out, labels[idx], F.cross_entropy)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step % 250 == 0 or step == args.steps:
                model.eval()
                with torch.no_grad():
                    pred = torch.cat([model(audio=val_audio[j:j + 100], video=val_video[j:j + 100]).logits.argmax(1)
                                      for j in range(0, len(val_labels), 100)])
                acc = (pred == val_labels).float().mean().item()
                print(f"{args.variant} {fusion} seed {seed} step {step}: train loss {np.mean(losses[-250:]):.3f}, "
                      f"val top-1 {acc:.3f} ({time.time() - start:.0f} s)", flush=True)
    return acc


def main() -> None:
    import pandas as pd

    from fusionbench.reports.stats import summarize

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="sync")
    ap.add_argument("--fusions", "--fusion", nargs="+", default=["early"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--train-clips", type=int, default=12000)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--quiet", type=int, default=1)
    ap.add_argument("--one-scene", action="store_true", help="shape 0 and pitch 0 in every clip")
    ap.add_argument("--norm", choices=("global", "feature"), default="global")
    ap.add_argument("--patch-embed", choices=PATCH_EMBEDS, default="learned")
    ap.add_argument("--pos-init-std", type=float, default=0.02)
    ap.add_argument("--rule", action="store_true")
    ap.add_argument("--out", help="CSV of the last validation top-1 per fusion and seed, and the per-fusion summary")
    ap.add_argument("--append", action="store_true", help="keep --out's other runs (same recipe: summarised together)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    frames, fbank, labels = render(args.variant, 1, args.train_clips, bool(args.quiet), args.one_scene)
    val_frames, val_fbank, val_labels = render(args.variant, 2, 600, bool(args.quiet), args.one_scene)
    if args.rule:
        print(f"hand-made rule on the validation clips: {rule_accuracy(val_frames, val_fbank, val_labels):.3f}")
    print(f"rendered {args.train_clips} + 600 clips in {time.time() - start:.0f} s", flush=True)
    data = (frames, fbank, labels, val_frames, val_fbank, val_labels)
    inputs = normaliser(fbank, frames, args.norm)
    recipe = (f"one_scene={int(args.one_scene)} norm={args.norm} patch_embed={args.patch_embed} "
              f"pos_init_std={args.pos_init_std:g} steps={args.steps} train_clips={args.train_clips}")
    rows = [dict(variant=args.variant, recipe=recipe, fusion=fusion, seed=seed,
                 val_top1=train_one(args, fusion, seed, data, inputs))
            for fusion in args.fusions for seed in args.seeds]
    runs = pd.DataFrame(rows)
    if args.append and args.out and Path(args.out).is_file():  # a run of this invocation replaces its earlier one
        old = pd.read_csv(args.out)
        old = old[old.seed.notna()].astype({"seed": int})
        key = ["variant", "recipe", "fusion", "seed"]
        old = old[~old.set_index(key).index.isin(runs.set_index(key).index)]
        runs = pd.concat([old[runs.columns], runs], ignore_index=True)
    summary = pd.DataFrame([dict(variant=v, recipe=r, fusion=f, **summarize(g.val_top1, (0.0, 1.0)))
                            for (v, r, f), g in runs.groupby(["variant", "recipe", "fusion"], sort=False)])
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        pd.concat([runs, summary], ignore_index=True).to_csv(args.out, index=False, float_format="%.4g")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
