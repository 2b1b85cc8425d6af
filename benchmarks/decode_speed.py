"""Decode speed: the baseline decoder (fusionbench.data.media before issue 11) against today's, in one process.

Writes 10 s H.264 sources (libx264 preset veryfast: 3 B-frames, one keyframe per 250 frames, as ffmpeg's defaults cut
clips; 30 fps; 0.7 / 2.5 / 4.5 Mbit/s at 360p / 720p / 1080p, typical of YouTube downloads; AAC stereo 48 kHz) and
decodes 2 s windows of 16 frames at size 112 and 224, starting at 0, 2, 4, 6 and 8 s (train-time random windows
land anywhere; the test-time centred window is the one at 4 s). Both decoders run single-threaded, alternately,
``--repeats`` times; each window's time is its minimum over the repeats (machines here vary 1.5-3x between runs).

Checks, before timing: the frames are bit-identical, and the waveform equals the baseline's once its down-mix is
undone (the baseline's FFmpeg mono matrix gives (L+R)/sqrt(2); today's rule is the channel mean (L+R)/2).

    .venv/bin/python benchmarks/decode_speed.py [--repeats 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from fusionbench.data.media import decode_clip

RESOLUTIONS = [(640, 360, 700_000), (1280, 720, 2_500_000), (1920, 1080, 4_500_000)]
SIZES = (112, 224)
STARTS = (0.0, 2.0, 4.0, 6.0, 8.0)
WINDOW = dict(num_frames=16, sample_rate=16000, clip_seconds=2.0)


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


# ======================================================================================================================
# BASELINE: fusionbench/data/media.py as of commit a396aa1 (before issue 11), copied verbatim except for names and
# the return value ((frames, waveform) instead of a DecodedClip). Kept here only to measure against; do not use.
# ======================================================================================================================
_baseline_local = threading.local()


def _baseline_sample_times(num_frames: int, clip_seconds: float, start_s: float = 0.0) -> np.ndarray:
    return start_s + (np.arange(num_frames) + 0.5) * clip_seconds / num_frames  # (T,)


def _baseline_reformatter() -> VideoReformatter:
    if getattr(_baseline_local, "pid", None) != os.getpid():
        _baseline_local.reformatter, _baseline_local.pid = VideoReformatter(), os.getpid()
    return _baseline_local.reformatter


def _baseline_to_rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = _baseline_reformatter().reformat(
        frame, width=new_w, height=new_h, format="rgb24", interpolation="BILINEAR", threads=1
    ).to_ndarray()  # (new_h, new_w, 3)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])  # (size, size, 3)


def _baseline_is_float_mono(frame: av.AudioFrame, sample_rate: int) -> bool:
    return (frame.sample_rate == sample_rate and frame.layout.nb_channels == 1
            and frame.format.name in ("flt", "fltp"))


def baseline_decode_clip(path, *, num_frames, size, sample_rate, clip_seconds, start_s=0.0,
                         allow_missing_audio=False) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        return _baseline_decode(container, Path(path), num_frames, size, sample_rate, clip_seconds, start_s,
                                allow_missing_audio)


def _baseline_decode(
    container: av.container.InputContainer, path: Path, num_frames: int, size: int, sample_rate: int,
    clip_seconds: float, start_s: float, allow_missing_audio: bool,
) -> tuple[np.ndarray, np.ndarray]:
    if not container.streams.video:
        raise RuntimeError("no video stream")
    vstream = container.streams.video[0]
    vstream.codec_context.thread_count = 1  # frame threading makes tiny clips 2–3× slower
    astream = container.streams.audio[0] if container.streams.audio else None
    if astream is None and not allow_missing_audio:
        raise RuntimeError("no audio stream (pass allow_missing_audio=True to use silence)")
    end_s = start_s + clip_seconds
    if start_s > 0:
        container.seek(int(start_s * av.time_base), backward=True)  # to the keyframe at or before start_s

    targets = _baseline_sample_times(num_frames, clip_seconds, start_s)  # (T,)
    chosen: list[np.ndarray | None] = [None] * num_frames
    next_target, prev, prev_rgb = 0, None, None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate) if astream is not None else None
    chunks: list[np.ndarray] = []
    audio_t0: float | None = None
    video_done, audio_done = False, astream is None
    eps = 1e-6

    def rgb_of(frame: av.VideoFrame) -> np.ndarray:
        nonlocal prev_rgb
        if prev_rgb is None or prev_rgb[0] is not frame:
            prev_rgb = (frame, _baseline_to_rgb(frame, size))
        return prev_rgb[1]

    streams = [vstream] + ([astream] if astream is not None else [])
    for packet in container.demux(*streams):
        if packet.stream.type == "video" and not video_done:
            for frame in packet.decode():
                t = frame.time if frame.time is not None else 0.0
                while next_target < num_frames and t > targets[next_target] + eps:
                    chosen[next_target] = rgb_of(prev if prev is not None else frame)  # on screen at the target
                    next_target += 1
                prev = frame
                if next_target == num_frames:
                    video_done = True
                    break
        elif packet.stream.type == "audio" and not audio_done:
            for frame in packet.decode():
                if audio_t0 is None:
                    audio_t0 = frame.time if frame.time is not None else start_s
                if _baseline_is_float_mono(frame, sample_rate):  # nothing to convert: skip swresample (≈0.1 ms a frame)
                    chunks.append(frame.to_ndarray()[0].astype(np.float32, copy=False))  # (n,)
                else:
                    chunks.extend(f.to_ndarray()[0] for f in resampler.resample(frame))  # (n,) each
                if frame.time is not None and frame.time + frame.samples / frame.sample_rate >= end_s:
                    audio_done = True
        if video_done and audio_done:
            break
    if not video_done:
        if prev is None:
            raise RuntimeError("no decodable video frame in the window")
        for i in range(next_target, num_frames):  # the video ended before the window: hold its last frame
            chosen[i] = rgb_of(prev)
    frames = np.stack(chosen)  # (T, size, size, 3)

    n = round(sample_rate * clip_seconds)
    if astream is None:
        return (frames, np.zeros(n, dtype=np.float32))
    chunks.extend(f.to_ndarray()[0] for f in resampler.resample(None))  # flush the resampler
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    offset = round(((audio_t0 if audio_t0 is not None else start_s) - start_s) * sample_rate)
    if offset < 0:  # decoding began before start_s (seek lands on an earlier packet): drop the excess
        audio = audio[-offset:]
    elif offset > 0:  # the audio stream begins after start_s: silence until it does
        audio = np.concatenate([np.zeros(offset, dtype=np.float32), audio])
    waveform = np.zeros(n, dtype=np.float32)
    waveform[: min(n, audio.size)] = audio[:n]
    return (frames, waveform)


# ======================================================================================================================
# END OF BASELINE
# ======================================================================================================================


def check_equal(path: Path, size: int) -> None:
    """Frames bit-identical; waveform equal to the baseline's with its (L+R)/sqrt(2) down-mix undone."""
    for start in STARTS:
        old_frames, old_wave = baseline_decode_clip(path, size=size, start_s=start, **WINDOW)
        new = decode_clip(path, size=size, start_s=start, **WINDOW)
        assert np.array_equal(old_frames, new.frames), (path, start, "frames differ")
        err = np.abs(old_wave / np.sqrt(2) - new.waveform).max()
        assert err < 1e-4, (path, start, f"waveform differs by {err}")


def time_once(fn, path: Path, size: int, start: float) -> float:
    t = time.perf_counter()
    fn(path, size=size, start_s=start, **WINDOW)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write (or reuse) the sources here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="decode_speed_"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for width, height, bit_rate in RESOLUTIONS:
        path = folder / f"src_{height}p.mp4"
        if not path.is_file():
            t = time.perf_counter()
            write_source(path, width, height, bit_rate)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s", flush=True)
        for size in SIZES:
            check_equal(path, size)
            best = {"baseline": [np.inf] * len(STARTS), "new": [np.inf] * len(STARTS)}
            for _ in range(args.repeats):
                for i, start in enumerate(STARTS):
                    for name, fn in (("baseline", baseline_decode_clip), ("new", decode_clip)):
                        best[name][i] = min(best[name][i], time_once(fn, path, size, start))
            old_rate, new_rate = len(STARTS) / sum(best["baseline"]), len(STARTS) / sum(best["new"])
            centre = STARTS.index(4.0)
            rows.append((f"{height}p", size, old_rate, new_rate, new_rate / old_rate,
                         best["baseline"][centre], best["new"][centre]))
            print(f"{height}p size {size}: {old_rate:.2f} -> {new_rate:.2f} clips/s", flush=True)
    print()
    print("| source | size | baseline clips/s | new clips/s | ratio | centred window: baseline s | new s |")
    print("|---|---|---|---|---|---|---|")
    for res, size, old_rate, new_rate, ratio, old_c, new_c in rows:
        print(f"| {res} | {size} | {old_rate:.2f} | {new_rate:.2f} | {ratio:.2f}x | {old_c:.3f} | {new_c:.3f} |")
    print(f"\n(2 s windows of 16 frames from 10 s H.264 sources, starts {STARTS} s, min of {args.repeats} repeats, "
          "one thread each; frames bit-identical, waveforms equal up to the down-mix rule)")


if __name__ == "__main__":
    main()
