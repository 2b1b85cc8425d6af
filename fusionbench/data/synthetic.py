"""The embedded procedural audio-visual dataset: known-answer tasks written as real mp4 files + ``clips.csv``.

Each clip has latent factors drawn from its own RNG, seeded by ``(seed, index)`` (so any number of workers
gives the same files):

- video: a ``shape`` (circle, square, triangle, cross) of a nuisance ``colour`` moving linearly from
  ``(x0, y0)`` to ``(x1, y1)``; at each visual event frame the object turns white (``flash="object"``) or the
  whole frame brightens (``flash="frame"``); Gaussian pixel noise of σ ``video_noise``.
- audio: a ``pitch`` (330, 523, 784, 1245 Hz, ±3 % jitter) in a nuisance ``timbre`` (sine, square, saw; band-limited):
  a quiet continuous tone plus 80 ms bursts starting at each audio event frame's start; white noise at
  ``audio_snr_db`` relative to the clip's clean signal.
- ``drop``: with probability ``drop_p`` a clip of ``drop_splits`` loses one modality (audio or video, 50/50, drawn
  for every clip, so the same clips lose the same modality whichever splits are dropped). ``drop_mode``: ``noise``
  (destroyed: the stream is pure noise, nothing marks it) or ``absent`` (the mp4 has no stream for it: the reader
  reports it missing, and ``data.missing_modality=absent`` routes the clip through the fusion's unimodal path).
  ``data.synth`` defaults: absent, train only (the test split stays clean); the functions' own defaults are noise
  in every split (``fusionbench data synth --drop-p``).

Tasks (``TASKS``; the rows of reference/synthetic-tasks.md):

- ``joint`` (16): label = shape·4 + pitch. Each modality alone knows only its own factor: ceiling 1/4.
- ``modsum`` (4): label = (shape + pitch) mod 4. Each modality alone is at chance. The object is still and of one
  colour, there are no events, and the noise is milder (``TaskSpec.motion``, ``colour``, ``events``): the
  interaction has no gradient signal until both factors are salient (fusionbench's choice, measured; see ``TASKS``).
- ``paired`` (4): label = shape = pitch: one source, seen and heard (each shape sounds its own pitch). Either modality
  alone solves it; the class is the only factor the two share (no events; colour, position, motion and timbre are
  independent nuisances), so audio-visual correspondence (contrastive pretraining) can learn it without labels. The
  pretraining benchmark's task (fusionbench's own, not a fusion test).
- ``sync`` (2): 1 if the audio bursts fall on the visual flash frames, 0 if they are the same rhythm circularly
  shifted. Leak-free by construction (fusionbench's rule): visual events are a uniform k-subset of all T frames
  (first and last included), a negative's shift is uniform over the shifts that put every burst ≥ ``min_shift``
  frames (circularly) from every flash, and a rhythm with no such shift is redrawn in *both* classes. The set
  of valid shifts depends only on the rhythm's differences, so it is the same for a rhythm and its shifts, and
  each modality's event positions are uniform k-subsets in both classes: neither modality alone tells the class.

The pure renderer ``render_clip(factors)`` is separate from the mp4 writer, for fast in-memory experiments.
Determinism: libx264 single-threaded with ``mbtree=0`` and the native AAC encoder give byte-identical files
run to run for a given PyAV/FFmpeg build (reference/toolchain.md).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import av
import numpy as np

from fusionbench.config import drop_suffix

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (1.0, 0.25, 0.25), "green": (0.25, 0.9, 0.25), "blue": (0.3, 0.4, 1.0), "yellow": (0.95, 0.9, 0.2)}
PITCHES_HZ = (330.0, 523.0, 784.0, 1245.0)
TIMBRES = ("sine", "square", "saw")

ALL_SPLITS = ("train", "val", "test")

# Rendering constants (fusionbench's own choices).
BACKGROUND = 0.2  # grey level of the background, pixels in [0, 1]
FRAME_FLASH = 0.4  # brightness added to the whole frame at a visual event when flash == "frame"
OBJECT_RADIUS = 0.22  # object half-size as a fraction of the frame side
TONE_LEVEL, BURST_LEVEL = 0.1, 1.0  # envelope of the continuous tone and of the bursts (relative)
AUDIO_PEAK = 0.3  # amplitude of a burst before noise
BURST_SECONDS, RAMP_SECONDS = 0.080, 0.005  # burst length and its raised-cosine attack/release
PITCH_JITTER = 0.03
DROPPED_VIDEO = (0.5, 0.25)  # a dropped video is N(mean, std) pixel noise


@dataclass(frozen=True)
class TaskSpec:
    """One task: its label rule and the generator's per-task defaults (data, so they can be tuned)."""

    name: str
    num_classes: int
    rule: str  # the label rule in words
    unimodal_ceiling: float  # best accuracy of one modality alone at drop_p = 0
    class_names: tuple[str, ...]
    video_noise: float = 0.25  # pixel noise σ (pixels in [0, 1])
    audio_snr_db: float = 0.0
    events: tuple[int, int] = (3, 5)  # min, max events per clip (inclusive)
    flash: str = "object"  # "object": the object turns white; "frame": the whole frame brightens
    event_margin: int = 0  # events are drawn from frames margin … T-1-margin; > 0 makes sync leak (kept for tests)
    min_shift: int = 2  # sync negatives: every burst is ≥ this many frames (circularly) from every flash
    motion: bool = True  # False: the object sits still at the frame centre (no position nuisance)
    colour: str | None = None  # a fixed object colour; None: the colour is a random nuisance factor
    paired: bool = False  # True: the pitch is the shape's (pitch index = shape index), one source seen and heard
    timbre: str | None = None  # a fixed timbre; None: the timbre is a random nuisance factor
    one_scene: bool = False  # True: every clip shows the first shape and sounds the first pitch (no jitter)

    def label(self, shape: int, pitch: int, aligned: bool) -> int:
        if self.name == "joint":
            return shape * len(PITCHES_HZ) + pitch
        if self.name == "modsum":
            return (shape + pitch) % 4
        if self.name == "sync":
            return int(aligned)
        if self.name == "paired":
            return shape
        raise ValueError(f"no label rule for task {self.name!r}")


TASKS: dict[str, TaskSpec] = {
    "joint": TaskSpec(
        "joint", 16, "shape·4 + pitch", 0.25,
        tuple(f"{s}_{int(p)}hz" for s in SHAPES for p in PITCHES_HZ),
    ),
    # modsum has no linear signal in either modality (an XOR of shape and pitch), so training has no gradient until
    # the model finds the interaction. With motion, colour, σ 0.25 and 0 dB no fusion left chance in 500 steps
    # (measured). Here the factors are made salient: a still, single-colour object, no events (the pitch sounds
    # at one level through the clip and the shape shows in every frame), σ 0.03 and 20 dB. Little noise also leaves
    # little to memorise: at σ 0.1 / 10 dB late fusion and MBT fitted the 2,100 training clips' noise (train loss
    # 1.03, validation at chance) before MBT found the interaction. At σ 0.03 / 20 dB, through the benchmark's mp4
    # files, late fusion's train loss stays at ln 4 and MBT leaves chance in 3 of 3 seeds (2,100 training clips,
    # batch 32, ≤ 6 epochs; README).
    "modsum": TaskSpec(
        "modsum", 4, "(shape + pitch) mod 4", 0.25, tuple(f"sum{k}" for k in range(4)),
        video_noise=0.03, audio_snr_db=20.0, events=(0, 0), motion=False, colour="red",
    ),
    # paired: the joint task's nuisances and noise, without events (aligned bursts and flashes would be a second
    # shared factor, one that tells the clips of a batch apart better than the 4 classes do).
    "paired": TaskSpec(
        "paired", 4, "shape = pitch (one source, seen and heard)", 1.0,
        tuple(f"{s}_{int(p)}hz" for s, p in zip(SHAPES, PITCHES_HZ)), events=(0, 0), paired=True,
    ),
    # sync: only the timing differs between clips. With motion, colour, timbre, shape and pitch as nuisances, σ 0.15
    # and 10 dB, no fusion left chance in up to 8,000 steps (README, "sync"); the rendering here is modsum's quiet one
    # (a still red object, σ 0.03, 20 dB) with one scene (a sine at one pitch): it is learnt with the recipe of the
    # extended tier (data.norm_by=feature, model.patch_embed=frozen, model.pos_init_std=1, ≤ 5,000 steps at a
    # constant lr).
    "sync": TaskSpec(
        "sync", 2, "1 if the audio bursts coincide with the visual flashes, 0 if circularly shifted by ≥ 2 frames",
        0.5, ("shifted", "aligned"), video_noise=0.03, audio_snr_db=20.0, events=(2, 4), flash="frame",
        motion=False, colour="red", timbre="sine", one_scene=True,
    ),
}


# What theory says each task must show (the leaderboard prints it above the task's table). A stretch task is one no
# fusion has learnt within the CPU budget although it is leak-free: shown flagged, not dropped (README).
KNOWN_ANSWERS: dict[str, str] = {
    "joint": "every fusion solves it; one modality alone reaches at most 25 %",
    "modsum": "score-level late fusion stays at chance (25 %); the cross-modal fusions are clearly above",
    "sync": "the fusions with time-aligned cross-modal attention (early, mid, Zorro) are above late fusion, which "
            "stays at chance (50 %), with 95 % intervals that do not overlap",
    "paired": "either modality alone solves it; pretraining without labels + a linear probe beats the probe of the "
              "same encoder randomly initialised (benchmarks/pretrain_gain.py)",
}
# The robust block of experiments/benchmark-extended.yaml: a set whose clips lose a modality is its own dataset,
# ``synth-<task><config.drop_suffix>``, and states its own known answer.
KNOWN_ANSWERS["paired" + drop_suffix(0.5, "noise", ALL_SPLITS)] = (
    "half the clips of every split have one modality destroyed (pure noise): fusion beats the best single modality "
    "(each fusion's av above its own audio_only and video_only, which cannot pass the unimodal ceiling 81.25 %)")
KNOWN_ANSWERS["paired" + drop_suffix(0.5, "absent", ("train",))] = (
    "half the training clips lack one modality (absent streams; the test split is clean): the fusions that keep "
    "unimodal readouts (late, Zorro) lose least from av to audio_only and video_only")
STRETCH_TASKS: dict[str, str] = {}  # none today: sync is learnt with its recipe (experiments/benchmark-extended.yaml)


def unimodal_ceiling(task: str | TaskSpec, drop_p: float = 0.0) -> float:
    """Best accuracy of one modality alone: the clean ceiling on clips where it survives, chance where dropped."""
    spec = TASKS[task] if isinstance(task, str) else task
    chance = 1.0 / spec.num_classes
    return (1 - drop_p / 2) * spec.unimodal_ceiling + drop_p / 2 * chance


@dataclass(frozen=True)
class RenderParams:
    num_frames: int = 16
    size: int = 32
    fps: float = 8.0
    sample_rate: int = 16000
    clip_seconds: float = 2.0
    video_noise: float = 0.25
    audio_snr_db: float = 0.0
    flash: str = "object"


@dataclass(frozen=True)
class ClipFactors:
    """Everything that determines one clip; ``render_clip`` is a pure function of it."""

    index: int
    task: str
    label: int
    shape: int
    colour: str
    pitch: int
    pitch_hz: float  # with jitter
    timbre: str
    x0: float  # object centre at the first / last frame, pixels
    y0: float
    x1: float
    y1: float
    events: tuple[int, ...]  # visual event (flash) frames
    audio_events: tuple[int, ...]  # audio burst frames
    aligned: bool
    shift: int  # circular shift from visual to audio events (0 when aligned)
    drop: str  # "" | "audio" | "video"
    noise_seed: int
    params: RenderParams = RenderParams()
    split: str = ""
    drop_mode: str = "noise"  # how ``drop`` fails: noise (a pure-noise stream) | absent (no stream in the mp4)

    def row(self, path: str) -> dict[str, Any]:
        """The clip's ``clips.csv`` row."""
        return {
            "path": path, "label": self.label, "split": self.split, "task": self.task,
            "shape": SHAPES[self.shape], "colour": self.colour, "pitch": self.pitch, "pitch_hz": self.pitch_hz,
            "timbre": self.timbre, "x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1,
            "events": ";".join(map(str, self.events)), "audio_events": ";".join(map(str, self.audio_events)),
            "aligned": int(self.aligned), "shift": self.shift, "drop": self.drop, "noise_seed": self.noise_seed,
        }


CSV_COLUMNS = [
    "path", "label", "split", "task", "shape", "colour", "pitch", "pitch_hz", "timbre", "x0", "y0", "x1", "y1",
    "events", "audio_events", "aligned", "shift", "drop", "noise_seed",
]


def valid_shifts(events: Sequence[int], num_frames: int, min_shift: int) -> list[int]:
    """Shifts s (1 … T-1) that put every shifted event ≥ ``min_shift`` frames (circularly) from every event.

    Depends only on the events' pairwise differences, hence is the same for a rhythm and any circular shift of it.
    """
    ev = np.asarray(events)
    out = []
    for s in range(1, num_frames):
        d = np.abs(((ev + s) % num_frames)[:, None] - ev[None, :])  # (k, k)
        if np.minimum(d, num_frames - d).min() >= min_shift:
            out.append(s)
    return out


def draw_factors(spec: TaskSpec, seed: int, index: int, params: RenderParams, drop_p: float = 0.0) -> ClipFactors:
    """The latent factors of clip ``index``, from an RNG seeded by (seed, index) alone."""
    rng = np.random.default_rng([seed, index])
    T, size = params.num_frames, params.size
    shape = int(rng.integers(len(SHAPES)))
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    pitch = int(rng.integers(len(PITCHES_HZ)))
    if spec.paired:  # after the draw, so the RNG stream does not depend on the spec
        pitch = shape
    pitch_hz = round(PITCHES_HZ[pitch] * (1 + rng.uniform(-PITCH_JITTER, PITCH_JITTER)), 2)
    timbre = TIMBRES[int(rng.integers(len(TIMBRES)))]
    if spec.one_scene:  # after the draws, so the RNG stream does not depend on the spec
        shape, pitch, pitch_hz = 0, 0, PITCHES_HZ[0]
    timbre = spec.timbre or timbre
    lo, hi = OBJECT_RADIUS * size + 1, size - OBJECT_RADIUS * size - 1
    x0, y0, x1, y1 = (round(float(v), 2) for v in rng.uniform(lo, hi, size=4))
    if not spec.motion:  # drawn all the same, so the RNG stream does not depend on the spec
        x0 = y0 = x1 = y1 = size / 2
    colour = spec.colour or colour
    candidates = np.arange(spec.event_margin, T - spec.event_margin)
    while True:  # the same draw in both classes: a rhythm with no valid shift is redrawn whatever the label
        k = int(rng.integers(spec.events[0], spec.events[1] + 1))
        events = tuple(int(e) for e in np.sort(rng.choice(candidates, size=k, replace=False)))
        shifts = valid_shifts(events, T, spec.min_shift) if spec.name == "sync" else [0]
        if shifts:
            break
    aligned = bool(rng.integers(2)) if spec.name == "sync" else True
    shift = int(rng.choice(shifts))  # drawn in both classes so the RNG stream does not depend on the label
    if aligned:
        shift = 0
    audio_events = tuple(sorted((e + shift) % T for e in events))
    dropped = rng.uniform() < drop_p
    which = ("audio", "video")[int(rng.integers(2))]
    noise_seed = int(rng.integers(2**31))
    return ClipFactors(
        index=index, task=spec.name, label=spec.label(shape, pitch, aligned), shape=shape, colour=colour,
        pitch=pitch, pitch_hz=pitch_hz, timbre=timbre, x0=x0, y0=y0, x1=x1, y1=y1, events=events,
        audio_events=audio_events, aligned=aligned, shift=shift, drop=which if dropped else "",
        noise_seed=noise_seed, params=params,
    )


def assign_splits(n: int, seed: int, val_frac: float, test_frac: float) -> list[str]:
    """Exact fractions: a seeded permutation; its first round(n·test_frac) clips are test, the next val."""
    order = np.random.default_rng([seed, 2**32 - 1]).permutation(n)
    n_test, n_val = round(n * test_frac), round(n * val_frac)
    if n_test + n_val > n:
        raise ValueError(f"val_frac + test_frac = {val_frac + test_frac} leaves no training clips")
    split = np.array(["train"] * n, dtype=object)
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    return list(split)


# ---------------------------------------------------------------------------------------------- rendering


def _shape_sdf(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of each pixel to the shape centred at the origin, half-size r."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return np.sqrt(dx**2 + dy**2) - r
    if shape == "square":
        return np.maximum(ax, ay) - 0.85 * r  # same area order as the circle
    if shape == "cross":
        arm = r / 3
        return np.minimum(np.maximum(ax - r, ay - arm), np.maximum(ax - arm, ay - r))
    if shape == "triangle":  # apex (0, -r), base corners (±0.95r, 0.75r); max of the three edge distances
        w, h = 0.95 * r, 0.75 * r
        side = (ax * (h + r) - (dy + r) * w) / np.hypot(h + r, w)
        return np.maximum(dy - h, side)
    raise ValueError(f"unknown shape {shape!r}")


def render_video(f: ClipFactors, rng: np.random.Generator) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of clip ``f``."""
    p = f.params
    T, size = p.num_frames, p.size
    if f.drop == "video" and f.drop_mode == "absent":  # what the reader gives for a missing stream
        return np.zeros((T, size, size, 3), dtype=np.uint8)
    if f.drop == "video":
        mean, std = DROPPED_VIDEO
        noise = mean + std * rng.standard_normal((T, size, size, 3), dtype=np.float32)
        return (np.clip(noise, 0, 1) * 255 + 0.5).astype(np.uint8)
    t = np.arange(T, dtype=np.float32) / max(T - 1, 1)  # (T,)
    cx = f.x0 + (f.x1 - f.x0) * t  # (T,)
    cy = f.y0 + (f.y1 - f.y0) * t
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    dx = grid[None, None, :] - cx[:, None, None]  # (T, 1, W)
    dy = grid[None, :, None] - cy[:, None, None]  # (T, H, 1)
    dx, dy = np.broadcast_arrays(dx, dy)  # (T, H, W)
    cover = np.clip(0.5 - _shape_sdf(SHAPES[f.shape], dx, dy, OBJECT_RADIUS * size), 0, 1)[..., None]  # (T, H, W, 1)
    colour = np.tile(np.asarray(COLOURS[f.colour], dtype=np.float32), (T, 1))  # (T, 3)
    flash = np.zeros(T, dtype=bool)
    flash[list(f.events)] = True
    if p.flash == "object":
        colour[flash] = 1.0
    frames = (BACKGROUND * (1 - cover) + colour[:, None, None, :] * cover).astype(np.float32)  # (T, H, W, 3)
    if p.flash == "frame":
        frames[flash] += FRAME_FLASH
    if p.video_noise > 0:
        frames += p.video_noise * rng.standard_normal(frames.shape, dtype=np.float32)
    return (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)


TONE_TABLE = 8192  # samples in one period of the wavetable


def _tone(timbre: str, f0: float, n: int, sample_rate: int) -> np.ndarray:
    """Band-limited periodic tone of unit RMS (harmonics below 0.45·sample_rate), read from a one-period table."""
    harmonics = np.arange(1, int(0.45 * sample_rate / f0) + 1)
    if timbre == "sine":
        amp = (harmonics == 1).astype(np.float64)
    elif timbre == "square":
        amp = np.where(harmonics % 2 == 1, 1.0 / harmonics, 0.0)
    elif timbre == "saw":
        amp = 1.0 / harmonics
    else:
        raise ValueError(f"unknown timbre {timbre!r}")
    amp = amp / np.sqrt((amp**2).sum() / 2)  # unit RMS
    spectrum = np.zeros(TONE_TABLE // 2 + 1, dtype=np.complex128)
    spectrum[harmonics] = -0.5j * amp * TONE_TABLE  # Σ amp_h · sin(2π h φ)
    table = np.fft.irfft(spectrum, TONE_TABLE)  # (TONE_TABLE,)
    index = (np.arange(n) * (f0 * TONE_TABLE / sample_rate)).astype(np.int64) % TONE_TABLE  # (S,) nearest below
    return table[index]


def render_audio(f: ClipFactors, rng: np.random.Generator) -> np.ndarray:
    """float32 (S,) waveform of clip ``f``, S = round(sample_rate · clip_seconds)."""
    p = f.params
    sr = p.sample_rate
    n = round(sr * p.clip_seconds)
    if f.drop == "audio" and f.drop_mode == "absent":  # what the reader gives for a missing stream
        return np.zeros(n, dtype=np.float32)
    env = np.full(n, TONE_LEVEL)  # (S,)
    burst_n, ramp_n = round(BURST_SECONDS * sr), round(RAMP_SECONDS * sr)
    shape = np.ones(burst_n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_n) / ramp_n)
    shape[:ramp_n], shape[-ramp_n:] = ramp, ramp[::-1]
    for e in f.audio_events:
        start = round(e / p.fps * sr)
        stop = min(start + burst_n, n)
        env[start:stop] = np.maximum(env[start:stop], TONE_LEVEL + (BURST_LEVEL - TONE_LEVEL) * shape[: stop - start])
    signal = AUDIO_PEAK * env * _tone(f.timbre, f.pitch_hz, n, sr)
    rms = float(np.sqrt((signal**2).mean()))
    if f.drop == "audio":
        wave = rng.normal(0.0, rms, n)
    else:
        wave = signal + rng.normal(0.0, rms / 10 ** (p.audio_snr_db / 20), n)
    peak = float(np.abs(wave).max())
    if peak > 0.99:
        wave = wave * (0.99 / peak)
    return wave.astype(np.float32)


def render_clip(f: ClipFactors) -> tuple[np.ndarray, np.ndarray]:
    """Pure in-memory renderer: factors → (frames uint8 (T, H, W, 3), waveform float32 (S,))."""
    rng = np.random.default_rng(f.noise_seed)
    frames = render_video(f, rng)  # (T, H, W, 3)
    waveform = render_audio(f, rng)  # (S,)
    return frames, waveform


# ---------------------------------------------------------------------------------------------- mp4 writing

X264_OPTIONS = {"preset": "ultrafast", "crf": "18", "x264-params": "mbtree=0:threads=1"}
AAC_OPTIONS = {"aac_coder": "fast"}  # ~2× faster than the default twoloop coder on 2 s clips
AAC_BIT_RATE = 64000


def write_mp4(path: Path, frames: np.ndarray | None, waveform: np.ndarray | None, fps: float, sample_rate: int) -> None:
    """One mp4 with H.264 video (libx264, yuv420p, single thread, mbtree=0) and mono AAC audio; a modality given as
    None has no stream in the file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")  # renamed when complete: readers never see half a file
    try:
        _encode(tmp, frames, waveform, fps, sample_rate)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _encode(path: Path, frames: np.ndarray | None, waveform: np.ndarray | None, fps: float, sample_rate: int) -> None:
    from fractions import Fraction

    with av.open(str(path), "w", format="mp4") as container:
        if frames is not None:
            T, H, W, _ = frames.shape
            rate = Fraction(fps).limit_denominator(1000)
            video = container.add_stream("libx264", rate=rate, options=dict(X264_OPTIONS))
            video.width, video.height, video.pix_fmt = W, H, "yuv420p"
            video.codec_context.thread_count = 1
        if waveform is not None:
            audio = container.add_stream("aac", rate=sample_rate, layout="mono", options=dict(AAC_OPTIONS))
            audio.bit_rate = AAC_BIT_RATE
        if frames is not None:
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = i
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
        if waveform is not None:
            frame = av.AudioFrame.from_ndarray(waveform[None, :].astype(np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, 0
            container.mux(audio.encode(frame))
            container.mux(audio.encode(None))


def _write_many(job: tuple[Path, list[ClipFactors]]) -> int:
    out, factors = job
    for f in factors:
        frames, waveform = render_clip(f)
        if f.drop_mode == "absent":  # the dropped modality has no stream in the file
            frames, waveform = (None if f.drop == "video" else frames), (None if f.drop == "audio" else waveform)
        write_mp4(out / clip_path(f.index), frames, waveform, f.params.fps, f.params.sample_rate)
    return len(factors)


class ConsoleLine:
    """A progress line on ``self.stream`` (stderr when None): rewritten in place on a terminal, a plain line in logs."""

    stream: Any = None

    def _out(self) -> Any:
        return self.stream if self.stream is not None else sys.stderr

    def _tty(self) -> bool:
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def _show(self, line: str, end_tty: str = "") -> None:
        """Print ``line``: over the previous one on a terminal (ending with ``end_tty``), else as its own line."""
        print(f"\r{line}\033[K" if self._tty() else line, end=end_tty if self._tty() else "\n", file=self._out(),
              flush=True)


class GenerationProgress(ConsoleLine):
    """Progress of writing ``n`` clips, on stderr: one line rewritten in place on a terminal, otherwise a plain line
    each time another ~10 % is done (logs, ``make`` output), then a closing line with the rate in clips/s."""

    def __init__(self, n: int, label: str, stream: Any = None, every: float = 0.1) -> None:
        self.n, self.label, self.stream, self.every = n, label, stream, every
        self.done, self.shown, self.start = 0, 0.0, time.perf_counter()

    def update(self, clips: int) -> None:
        self.done += clips
        frac = self.done / max(self.n, 1)
        if self.done >= self.n or (not self._tty() and frac - self.shown < self.every):
            return  # the closing line reports the end
        self.shown = frac
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        eta = (self.n - self.done) / rate if rate > 0 else float("inf")
        self._show(f"{self.label}: {self.done}/{self.n} clips ({100 * frac:.0f} %), {rate:.1f} clips/s, "
                   f"~{eta:.0f} s left")

    def close(self) -> None:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        self._show(f"{self.label}: wrote {self.done} clips in {elapsed:.1f} s ({rate:.1f} clips/s)", end_tty="\n")


def clip_path(index: int) -> str:
    return f"clips/{index:05d}.mp4"


def render_params(
    spec: TaskSpec, *, video_noise: float | None = None, audio_snr_db: float | None = None, num_frames: int = 16,
    size: int = 32, fps: float = 8.0, sample_rate: int = 16000, clip_seconds: float = 2.0,
) -> RenderParams:
    """Rendering parameters; a noise level of None takes the task's default."""
    return RenderParams(
        num_frames=num_frames, size=size, fps=float(fps), sample_rate=sample_rate, clip_seconds=float(clip_seconds),
        video_noise=spec.video_noise if video_noise is None else float(video_noise),
        audio_snr_db=spec.audio_snr_db if audio_snr_db is None else float(audio_snr_db), flash=spec.flash,
    )


def make_factors(
    spec: TaskSpec, n: int, seed: int, params: RenderParams, *, drop_p: float = 0.0, val_frac: float = 0.15,
    test_frac: float = 0.15, drop_mode: str = "noise", drop_splits: Sequence[str] = ALL_SPLITS,
) -> list[ClipFactors]:
    """The factors of clips 0 … n-1 with their splits: what ``generate`` writes, without writing it. Clips outside
    ``drop_splits`` keep both modalities (their draws are made all the same: the RNG streams do not depend on it)."""
    if drop_mode not in ("noise", "absent"):
        raise ValueError(f"drop_mode={drop_mode!r} is not one of noise, absent")
    splits = assign_splits(n, seed, val_frac, test_frac)
    out = []
    for i in range(n):
        f = draw_factors(spec, seed, i, params, drop_p)
        drop = f.drop if splits[i] in drop_splits else ""
        out.append(dataclasses.replace(f, split=splits[i], drop=drop, drop_mode=drop_mode))
    return out


SPEC_FIELDS_ADDED = {"timbre": None, "one_scene": False}  # TaskSpec fields added after sets were generated


def spec_record(spec: TaskSpec) -> dict[str, Any]:
    """The spec as ``generator.json`` records it: fields added later are left out while they hold their default, so
    a set generated before they existed is still recognised (not regenerated) and its run identities hold."""
    record = dataclasses.asdict(spec)
    return {k: v for k, v in record.items() if k not in SPEC_FIELDS_ADDED or v != SPEC_FIELDS_ADDED[k]}


def generator_info(spec: TaskSpec, n: int, seed: int, params: RenderParams, drop_p: float, val_frac: float,
                   test_frac: float, drop_mode: str = "noise", drop_splits: Sequence[str] = ALL_SPLITS,
                   ) -> dict[str, Any]:
    """What ``out/generator.json`` records: everything that determines the set (and the codec versions).

    ``drop_mode`` / ``drop_splits`` are recorded only where ``drop_p`` > 0 (they change nothing otherwise), so a
    clean set's record, and the run identities that hash it, are what they were before the keys existed."""
    info = {
        "task": spec.name, "n": n, "seed": seed, "drop_p": float(drop_p), "val_frac": float(val_frac),
        "test_frac": float(test_frac), "render": dataclasses.asdict(params), "spec": spec_record(spec),
        "av": av.__version__, "libavcodec": list(av.library_versions.get("libavcodec", ())),
    }
    if drop_p:
        info.update(drop_mode=drop_mode, drop_splits=[x for x in ALL_SPLITS if x in drop_splits])
    return info


def generate(
    task: str,
    n: int,
    seed: int,
    out: Path,
    *,
    video_noise: float | None = None,
    audio_snr_db: float | None = None,
    drop_p: float = 0.0,
    drop_mode: str = "noise",
    drop_splits: Sequence[str] = ALL_SPLITS,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    num_frames: int = 16,
    size: int = 32,
    fps: float = 8.0,
    sample_rate: int = 16000,
    clip_seconds: float = 2.0,
    workers: int = 1,
    spec: TaskSpec | None = None,
    progress: bool = True,
) -> Path:
    """Write ``n`` clips of ``task`` to ``out/clips/*.mp4`` and ``out/clips.csv``; returns the CSV path.

    ``video_noise`` / ``audio_snr_db`` of None take the task's default (``TASKS[task]``); ``spec`` replaces the
    task's spec (e.g. a deliberately leaky variant in tests). ``workers`` > 1 renders and encodes in a process
    pool; the output does not depend on it. ``out/generator.json`` records the parameters; the CSV is written
    last (tmp + rename), so its presence means the set is complete. ``progress`` shows clips written and clips/s
    on stderr (``GenerationProgress``).
    """
    spec = spec or TASKS.get(task)
    if spec is None:
        raise ValueError(f"unknown synthetic task {task!r}; valid: {', '.join(TASKS)}")
    params = render_params(
        spec, video_noise=video_noise, audio_snr_db=audio_snr_db, num_frames=num_frames, size=size, fps=fps,
        sample_rate=sample_rate, clip_seconds=clip_seconds,
    )
    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    factors = make_factors(spec, n, seed, params, drop_p=drop_p, val_frac=val_frac, test_frac=test_frac,
                           drop_mode=drop_mode, drop_splits=drop_splits)
    chunk = max(1, min(50, -(-n // (4 * max(workers, 1)))))  # ≥ 4 chunks per worker, ≤ 50 clips each
    jobs = [(out, factors[i : i + chunk]) for i in range(0, n, chunk)]
    shown = GenerationProgress(n, f"[data] generating synthetic {spec.name} ({out})") if progress else None
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            written = _write_many(job)
            if shown:
                shown.update(written)
    else:
        # fork: workers inherit the imported modules (no re-import cost); they use only numpy and PyAV.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
            for written in pool.imap_unordered(_write_many, jobs, chunksize=1):
                if shown:
                    shown.update(written)
    if shown:
        shown.close()
    info = generator_info(spec, n, seed, params, drop_p, val_frac, test_frac, drop_mode, drop_splits)
    atomic_write_text(out / "generator.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
    tmp = out / f".clips.csv.{os.getpid()}.tmp"
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(f.row(clip_path(f.index)) for f in factors)
    os.replace(tmp, out / "clips.csv")
    return out / "clips.csv"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
