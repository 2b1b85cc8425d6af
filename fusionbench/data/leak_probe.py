"""Leak probe: can ONE modality alone predict a synthetic task's label better than its stated ceiling?

For each modality a ridge classifier (one-vs-all least squares, its penalty picked by leave-one-out CV) is fitted
on hand-crafted features of the train + val splits and scored on the test split:

- video, per frame: mean R, G, B; brightness mean and std, and the mean relative to the clip's median frame (the
  flash envelope); mass, centroid and second moments of the bright foreground; a 4 × 4 grid of mean brightness;
  per clip: the object-centred 12 × 12 brightness patch averaged over frames (the shape).
- audio, per video frame: log energies in 1/6-octave bands (100 Hz – 0.47·sample_rate) of a Hann-windowed frame,
  and the frame's total log energy relative to the clip's median (the burst envelope, whatever the pitch);
  per clip: the band energies' mean over frames (the pitch).

Per-frame features keep their frame position, so any cue tied to *where* events sit in the clip (the sync
first/last-frame leak of reference/synthetic-tasks.md) is linearly readable. A modality whose test accuracy
exceeds the task's unimodal ceiling by more than ``tolerance`` (max(0.05, 3 binomial standard errors)) is a leak.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fusionbench.data import synthetic
from fusionbench.data.manifest import read_manifest
from fusionbench.data.media import decode_clip

ALPHAS = tuple(np.logspace(-1, 5, 13))  # ridge penalties tried by leave-one-out CV
GRID = 4  # coarse brightness grid per frame
PATCH = 12  # object-centred patch side (pixels)


# ---------------------------------------------------------------------------------------------- features


def video_features(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, T, H, W, 3) → float32 (N, F_v) per-frame colour / brightness / moment features + shape patch."""
    x = frames.astype(np.float32) / 255  # (N, T, H, W, 3)
    N, T, H, W, _ = x.shape
    grey = x.mean(-1)  # (N, T, H, W)
    rgb = x.mean((2, 3))  # (N, T, 3)
    level = grey.mean((2, 3))  # (N, T)
    envelope = level - np.median(level, axis=1, keepdims=True)  # (N, T)
    bright = np.stack([level, grey.std((2, 3)), envelope], -1)  # (N, T, 3)
    fg = np.maximum(grey - level[..., None, None] - 0.1, 0)  # (N, T, H, W) brighter than the frame's mean
    ys, xs = np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32)
    mass = fg.sum((2, 3)) + 1e-6  # (N, T)
    cy = (fg.sum(3) * ys).sum(2) / mass  # (N, T)
    cx = (fg.sum(2) * xs).sum(2) / mass
    dy, dx = ys[None, None, :, None] - cy[..., None, None], xs[None, None, None, :] - cx[..., None, None]
    syy, sxx, sxy = ((fg * d).sum((2, 3)) / mass for d in (dy * dy, dx * dx, dx * dy))  # (N, T) each
    moments = np.stack([mass / (H * W), cy / H, cx / W, syy / H, sxx / W, sxy / H], -1)  # (N, T, 6)
    grid = grey.reshape(N, T, GRID, H // GRID, GRID, W // GRID).mean((3, 5)).reshape(N, T, GRID * GRID)  # (N, T, 16)
    # shape: brightness patch centred on each frame's foreground centroid, averaged over frames
    off = np.arange(PATCH) - PATCH // 2
    rows = np.clip(np.round(cy)[..., None].astype(int) + off, 0, H - 1)  # (N, T, P)
    cols = np.clip(np.round(cx)[..., None].astype(int) + off, 0, W - 1)
    n_idx, t_idx = np.arange(N)[:, None, None, None], np.arange(T)[None, :, None, None]
    patch = grey[n_idx, t_idx, rows[..., :, None], cols[..., None, :]].mean(1).reshape(N, -1)  # (N, P·P)
    per_frame = np.concatenate([rgb, bright, moments, grid], -1).reshape(N, -1)  # (N, T·28)
    return np.concatenate([per_frame, patch], 1).astype(np.float32)


def audio_features(waveform: np.ndarray, sample_rate: int, num_frames: int) -> np.ndarray:
    """float (N, S) → float32 (N, F_a): per-video-frame log band energies + their clip mean."""
    N, S = waveform.shape
    seg = S // num_frames
    x = waveform[:, : seg * num_frames].reshape(N, num_frames, seg) * np.hanning(seg)  # (N, T, seg)
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2  # (N, T, seg//2+1)
    freqs = np.fft.rfftfreq(seg, 1 / sample_rate)
    edges = 100.0 * 2 ** (np.arange(0, np.log2(0.47 * sample_rate / 100) * 6 + 1) / 6)  # 1/6-octave edges
    band = np.digitize(freqs, edges) - 1  # band of each bin; -1 / len(edges)-1 are outside
    inside = (band >= 0) & (band < len(edges) - 1)
    bands = np.zeros((N, num_frames, len(edges) - 1), dtype=np.float64)  # (N, T, B)
    np.add.at(bands, (slice(None), slice(None), band[inside]), power[..., inside])
    logb = np.log(bands + 1e-8)  # (N, T, B)
    total = np.log(bands.sum(-1) + 1e-8)  # (N, T)
    envelope = total - np.median(total, axis=1, keepdims=True)  # (N, T)
    return np.concatenate([logb.reshape(N, -1), envelope, logb.mean(1)], 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- probe


def _fit_score(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    """Ridge classifier on standardised features, penalty by leave-one-out CV on the training clips.

    Returns the balanced test accuracy (mean per-class recall), whose chance level is 1/C whatever the class
    frequencies of a small test split (plain accuracy rewards learning the majority class).
    """
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    from sklearn.metrics import balanced_accuracy_score

    scaler = StandardScaler().fit(xtr)
    model = RidgeClassifierCV(alphas=ALPHAS).fit(scaler.transform(xtr), ytr)
    return float(balanced_accuracy_score(yte, model.predict(scaler.transform(xte))))


def probe_features(
    video: np.ndarray, audio: np.ndarray, labels: np.ndarray, splits: np.ndarray, task: str, drop_p: float = 0.0
) -> dict[str, Any]:
    """The probe on precomputed features (N, F) per modality; ``splits`` holds train / val / test."""
    spec = synthetic.TASKS[task]
    from threadpoolctl import threadpool_limits  # with scikit-learn (the dev extra)

    tr, te = (splits == "train") | (splits == "val"), (splits == "test")
    if not tr.any() or not te.any():
        raise ValueError("the leak probe needs train and test clips")
    out: dict[str, Any] = {}
    with threadpool_limits(1):  # multi-threaded BLAS on a loaded 2-core machine was 10–30× slower
        for name, x in (("audio", audio), ("video", video)):
            out[name] = _fit_score(x[tr], labels[tr], x[te], labels[te])
    ceiling = synthetic.unimodal_ceiling(spec, drop_p)
    n_test = int(te.sum())
    tolerance = max(0.05, 3 * float(np.sqrt(ceiling * (1 - ceiling) / n_test)))
    out.update(
        task=task, ceiling=ceiling, chance=1 / spec.num_classes, tolerance=tolerance, n_train=int(tr.sum()),
        n_test=n_test, leak=[m for m in ("audio", "video") if out[m] > ceiling + tolerance],
    )
    return out


def leak_probe_factors(factors: Sequence[synthetic.ClipFactors], drop_p: float = 0.0) -> dict[str, Any]:
    """The probe on clips rendered in memory (``render_clip``): checks the generator itself, fast."""
    rendered = [synthetic.render_clip(f) for f in factors]
    frames = np.stack([r[0] for r in rendered])  # (N, T, H, W, 3)
    waves = np.stack([r[1] for r in rendered])  # (N, S)
    p = factors[0].params
    return probe_features(
        video_features(frames), audio_features(waves, p.sample_rate, p.num_frames),
        np.array([f.label for f in factors]), np.array([f.split for f in factors]), factors[0].task, drop_p,
    )


def leak_probe_synthetic(
    task: str, n: int = 1500, seed: int = 0, *, spec: synthetic.TaskSpec | None = None, drop_p: float = 0.0,
    test_frac: float = 0.3, **render: Any,
) -> dict[str, Any]:
    """Draw and render ``n`` clips of ``task`` (or of a variant ``spec``) in memory and probe them."""
    spec = spec or synthetic.TASKS[task]
    params = synthetic.render_params(spec, **render)
    factors = synthetic.make_factors(spec, n, seed, params, drop_p=drop_p, val_frac=0.0, test_frac=test_frac)
    return leak_probe_factors(factors, drop_p)


def leak_probe(
    manifest_or_dir: str | Path, *, max_clips: int | None = None, workers: int = 2,
) -> dict[str, Any]:
    """Probe a generated synthetic set: decode its mp4s (what models see) and fit each modality alone.

    ``manifest_or_dir``: a ``clips.csv`` or the folder holding it (with ``generator.json``). ``max_clips`` keeps the
    first clips of the file (faster; a noisier estimate). Returns {"audio": acc, "video": acc, "ceiling": …,
    "chance": …, "tolerance": …, "leak": [modalities above ceiling + tolerance], …}.
    """
    path = Path(manifest_or_dir)
    csv_path = path / "clips.csv" if path.is_dir() else path
    info_path = csv_path.parent / "generator.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    clips, _ = read_manifest(csv_path)
    with csv_path.open(newline="") as fh:
        tasks = {row.get("task", "") for row in csv.DictReader(fh)}
    task = info.get("task") or (tasks.pop() if len(tasks) == 1 else "")
    if task not in synthetic.TASKS:
        raise ValueError(f"{csv_path}: cannot tell the synthetic task (got {task!r}); the probe needs one of "
                         f"{', '.join(synthetic.TASKS)}")
    render = info.get("render", {})
    kwargs = {
        "num_frames": int(render.get("num_frames", 16)), "size": int(render.get("size", 32)),
        "sample_rate": int(render.get("sample_rate", 16000)), "clip_seconds": float(render.get("clip_seconds", 2.0)),
    }
    clips = clips[:max_clips] if max_clips else clips
    paths = [str(c.path) for c in clips]
    jobs = [(paths[i : i + 100], kwargs) for i in range(0, len(paths), 100)]
    if workers > 1 and len(jobs) > 1:  # features are computed where the clips are decoded: little to send back
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            parts = pool.map(_features_of, jobs, chunksize=1)
    else:
        parts = [_features_of(job) for job in jobs]
    return probe_features(
        np.concatenate([v for v, _ in parts]), np.concatenate([a for _, a in parts]),
        np.array([c.label for c in clips]), np.array([c.split for c in clips]), task, test_drop_p(info),
    )


def test_drop_p(info: dict[str, Any]) -> float:
    """The drop probability of a set's test split (what its unimodal ceiling depends on): ``drop_p`` where the
    generator dropped test clips (a record without ``drop_splits`` dropped every split), else 0."""
    drop_p = float(info.get("drop_p", 0.0))
    return drop_p if "test" in info.get("drop_splits", synthetic.ALL_SPLITS) else 0.0


def _features_of(job: tuple[list[str], dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Decode a chunk of clips → (video features, audio features)."""
    paths, kwargs = job
    # a set with absent streams (data.synth.drop_mode=absent): the missing modality decodes as zeros
    clips = [decode_clip(path, **kwargs, allow_missing_audio=True, allow_missing_video=True) for path in paths]
    frames = np.stack([c.frames for c in clips])  # (n, T, H, W, 3)
    waves = np.stack([c.waveform for c in clips])  # (n, S)
    return video_features(frames), audio_features(waves, kwargs["sample_rate"], kwargs["num_frames"])
