"""Decode speed: the decoder of commit 7195c19 ("old") against today's fusionbench.data.media ("new"), in one process.

Writes 10 s H.264 sources (libx264 preset veryfast: 3 B-frames, one keyframe per 250 frames, as ffmpeg's defaults cut
clips; 30 fps; 0.7 / 2.5 / 4.5 Mbit/s at 360p / 720p / 1080p, typical of YouTube downloads; AAC stereo 48 kHz) and
decodes 2 s windows of 16 frames at size 112 and 224, starting at 0, 2, 4, 6 and 8 s (train-time random windows
land anywhere; the test-time centred window is the one at 4 s), and one window that starts 0.03 s before the second
keyframe (8.30 s: the old decoder's 0.25 s audio seek margin sent it back to the first keyframe). The old decoder
runs single-threaded; the new one with ``threads`` 1 and 2; all alternately, ``--repeats`` times; each window's time
is its minimum over the repeats (machines here vary 1.5-3x between runs: the ratios within one run are what count).

Checks, before timing: frames and waveforms are bit-identical between old and new, at 1 and 2 threads.
Writes a table to stdout and ``--csv`` (default results/decode_speed.csv); the old decoder is read with
``git show 7195c19:fusionbench/data/media.py`` into ``--old-dir``.

    .venv/bin/python benchmarks/decode_speed.py [--repeats 2] [--keep DIR] [--old-dir DIR]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import av
import numpy as np

from fusionbench.data import media

OLD_COMMIT = "7195c19"
RESOLUTIONS = [(640, 360, 700_000), (1280, 720, 2_500_000), (1920, 1080, 4_500_000)]
SIZES = (112, 224)
STARTS = (0.0, 2.0, 4.0, 6.0, 8.0)
NEAR_KEY_S = 0.03  # the extra window starts this long before the second keyframe
WINDOW = dict(num_frames=16, sample_rate=16000, clip_seconds=2.0)
ROOT = Path(__file__).resolve().parents[1]


def write_source(path: Path, width: int, height: int, bit_rate: int, seconds: int = 10, fps: int = 30) -> Path:
    """A panning noise texture with sensor-like noise (real motion search, B-frames) and a 440/660 Hz stereo tone."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (height // 4 + 1, (width + 2 * fps * seconds) // 4 + 1, 3), np.uint8)
    tex = (tex.repeat(4, 0).repeat(4, 1) // 2 + 64).astype(np.uint8)
    noise = rng.integers(0, 12, (7, height, width, 3), np.uint8)
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        v.width, v.height, v.pix_fmt, v.bit_rate = width, height, "yuv420p", bit_rate
        a = c.add_stream("aac", rate=48000, layout="stereo")
        for i in range(fps * seconds):
            img = tex[:height, 2 * i : 2 * i + width] + noise[i % 7]  # (H, W, 3)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            c.mux(v.encode(frame))
        c.mux(v.encode(None))
        t = np.arange(48000 * seconds) / 48000
        tone = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32) * 0.2
        for s in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, s : s + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = 48000, s
            c.mux(a.encode(frame))
        c.mux(a.encode(None))
    return path


def load_old(folder: Path) -> ModuleType:
    """fusionbench/data/media.py as of OLD_COMMIT, imported from a file of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"media_{OLD_COMMIT}.py"
    path.write_text(subprocess.run(["git", "show", f"{OLD_COMMIT}:fusionbench/data/media.py"], cwd=ROOT,
                                   check=True, capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location(f"media_{OLD_COMMIT}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def keyframes(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(p.pts * p.time_base) for p in c.demux(video=0) if p.size and p.is_keyframe]


def check_identical(old: ModuleType, path: Path, size: int, starts: tuple[float, ...]) -> None:
    for start in starts:
        ref = old.decode_clip(path, size=size, start_s=start, **WINDOW)
        for threads in (1, 2):
            new = media.decode_clip(path, size=size, start_s=start, threads=threads, **WINDOW)
            assert np.array_equal(ref.frames, new.frames), (path, size, start, threads, "frames differ")
            assert np.array_equal(ref.waveform, new.waveform), (path, size, start, threads, "waveforms differ")
            assert ref.padded_frames == new.padded_frames and ref.padded_audio_s == new.padded_audio_s


def time_windows(fns: dict, path: Path, size: int, starts: tuple[float, ...], repeats: int) -> dict[str, list[float]]:
    """Minimum seconds per window over ``repeats``, the variants interleaved window by window."""
    best = {name: [np.inf] * len(starts) for name in fns}
    for _ in range(repeats):
        for i, start in enumerate(starts):
            for name, fn in fns.items():
                t = time.perf_counter()
                fn(path, size=size, start_s=start, **WINDOW)
                best[name][i] = min(best[name][i], time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="write (or reuse) the sources here")
    parser.add_argument("--old-dir", type=Path, default=None, help="where the old media.py is written")
    parser.add_argument("--csv", type=Path, default=ROOT / "results" / "decode_speed.csv")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="decode_speed_"))
    folder.mkdir(parents=True, exist_ok=True)
    old = load_old(args.old_dir or folder)
    fns = {
        "old": old.decode_clip,
        "new_1thread": lambda p, **kw: media.decode_clip(p, threads=1, **kw),
        "new_2threads": lambda p, **kw: media.decode_clip(p, threads=2, **kw),
    }
    load_before = os.getloadavg()[0]
    rows = []
    for width, height, bit_rate in RESOLUTIONS:
        path = folder / f"src_{height}p.mp4"
        if not path.is_file():
            t = time.perf_counter()
            write_source(path, width, height, bit_rate)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s", flush=True)
        near_key = (round(keyframes(path)[1] - NEAR_KEY_S, 3),)
        for windows, starts in (("0,2,4,6,8 s", STARTS), (f"{near_key[0]} s (near key)", near_key)):
            for size in SIZES if starts is STARTS else SIZES[:1]:
                check_identical(old, path, size, starts)
                best = time_windows(fns, path, size, starts, args.repeats)
                rate = {name: len(starts) / sum(times) for name, times in best.items()}
                rows.append({"source": f"{height}p", "size": size, "windows": windows, "old_clips_s": rate["old"],
                             "new_1thread_clips_s": rate["new_1thread"], "new_2threads_clips_s": rate["new_2threads"],
                             "ratio_1thread": rate["new_1thread"] / rate["old"],
                             "ratio_2threads": rate["new_2threads"] / rate["old"]})
                print(f"{height}p size {size} windows {windows}: old {rate['old']:.2f}, new {rate['new_1thread']:.2f}"
                      f" (1 thread), {rate['new_2threads']:.2f} (2 threads) clips/s", flush=True)
    load_after = os.getloadavg()[0]
    for row in rows:
        row.update(repeats=args.repeats, load_before=round(load_before, 2), load_after=round(load_after, 2))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    print()
    print("| source | size | windows | old clips/s | new, 1 thread | ratio | new, 2 threads | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['size']} | {r['windows']} | {r['old_clips_s']:.2f} "
              f"| {r['new_1thread_clips_s']:.2f} | {r['ratio_1thread']:.2f}x "
              f"| {r['new_2threads_clips_s']:.2f} | {r['ratio_2threads']:.2f}x |")
    print(f"\n(2 s windows of 16 frames from 10 s H.264 sources, min of {args.repeats} repeats; frames and waveforms "
          f"bit-identical old vs new; 1-min load average {load_before:.2f} before, {load_after:.2f} after, "
          f"{os.cpu_count()} cores; wrote {args.csv})")


if __name__ == "__main__":
    main()
