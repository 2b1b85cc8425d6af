"""Decode one clip with PyAV: T frames sampled uniformly over a window, and its mono waveform at a fixed rate.

Rules (fusionbench's own where the papers differ):

- The window is ``[start_s, start_s + clip_seconds)``. Frame i is the frame on screen at the centre of the i-th of
  T equal segments, ``start_s + (i + 0.5)·clip_seconds / T`` (the last frame whose timestamp is ≤ that time;
  the first frame if none; the last decoded frame repeats if the video ends early).
- Frames are resized so the short side is ``size`` and centre-cropped to ``size × size`` (PyAV/swscale, bilinear).
- Audio is downmixed and resampled by ``av.AudioResampler(format="flt", layout="mono", rate=sample_rate)`` and
  trimmed/zero-padded to exactly ``S = round(sample_rate · clip_seconds)`` samples from ``start_s`` (AAC decodes
  to whole 1024-sample frames: 2 s at 16 kHz gives 32,768 samples, trimmed to 32,000).
- Any failure (missing, unreadable or corrupt file, no video stream, no decodable frame, no audio stream unless
  ``allow_missing_audio``) raises ``MediaError(path, reason)``, never a bare PyAV traceback.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from fusionbench.errors import UserError


class MediaError(UserError):
    """A clip that cannot be decoded: ``where`` is the file; ``str()`` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(reason, str(self.path))

    def __reduce__(self):  # picklable across worker processes
        return (MediaError, (self.path, self.reason))


@dataclass
class DecodedClip:
    frames: np.ndarray  # uint8 (T, size, size, 3)
    waveform: np.ndarray  # float32 (S,)
    has_audio: bool


def sample_times(num_frames: int, clip_seconds: float, start_s: float = 0.0) -> np.ndarray:
    """Segment centres: the times at which the T frames are sampled."""
    return start_s + (np.arange(num_frames) + 0.5) * clip_seconds / num_frames  # (T,)


_local = threading.local()


def _reformatter() -> VideoReformatter:
    """One swscale context per thread and process, reused across frames (≈5× faster than one per frame).

    Single-threaded (``threads=1`` below): swscale's default thread pool is pointless on tiny frames and does not
    survive ``fork`` (a forked worker reusing the parent's context waits forever on its threads).
    """
    if getattr(_local, "pid", None) != os.getpid():
        _local.reformatter, _local.pid = VideoReformatter(), os.getpid()
    return _local.reformatter


def _to_rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
    """Short side → size (bilinear), centre crop → uint8 (size, size, 3)."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = _reformatter().reformat(
        frame, width=new_w, height=new_h, format="rgb24", interpolation="BILINEAR", threads=1
    ).to_ndarray()  # (new_h, new_w, 3)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])  # (size, size, 3)


def decode_clip(
    path: str | Path,
    *,
    num_frames: int,
    size: int,
    sample_rate: int,
    clip_seconds: float,
    start_s: float = 0.0,
    allow_missing_audio: bool = False,
) -> DecodedClip:
    """Decode ``num_frames`` frames and ``round(sample_rate·clip_seconds)`` mono samples from ``start_s``."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise MediaError(path, f"cannot open ({_reason(exc)})") from None
    try:
        with container:
            return _decode(container, path, num_frames, size, sample_rate, clip_seconds, start_s, allow_missing_audio)
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise MediaError(path, f"decoding failed ({_reason(exc)})") from None


def decode_job(job: tuple[int, str, dict[str, Any]]) -> tuple[int, DecodedClip | MediaError]:
    """(key, path, decode_clip kwargs) → (key, DecodedClip or the MediaError): for process pools."""
    key, path, kwargs = job
    try:
        return key, decode_clip(path, **kwargs)
    except MediaError as exc:
        return key, exc


def _is_float_mono(frame: av.AudioFrame, sample_rate: int) -> bool:
    """Already what the resampler would output (mono float at the target rate): its samples can be used as is."""
    return (frame.sample_rate == sample_rate and frame.layout.nb_channels == 1
            and frame.format.name in ("flt", "fltp"))


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _decode(
    container: av.container.InputContainer, path: Path, num_frames: int, size: int, sample_rate: int,
    clip_seconds: float, start_s: float, allow_missing_audio: bool,
) -> DecodedClip:
    if not container.streams.video:
        raise MediaError(path, "no video stream")
    vstream = container.streams.video[0]
    vstream.codec_context.thread_count = 1  # frame threading makes tiny clips 2–3× slower
    astream = container.streams.audio[0] if container.streams.audio else None
    if astream is None and not allow_missing_audio:
        raise MediaError(path, "no audio stream (pass allow_missing_audio=True to use silence)")
    end_s = start_s + clip_seconds
    if start_s > 0:
        container.seek(int(start_s * av.time_base), backward=True)  # to the keyframe at or before start_s

    targets = sample_times(num_frames, clip_seconds, start_s)  # (T,)
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
            prev_rgb = (frame, _to_rgb(frame, size))
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
                if _is_float_mono(frame, sample_rate):  # nothing to convert: skip swresample (≈0.1 ms a frame)
                    chunks.append(frame.to_ndarray()[0].astype(np.float32, copy=False))  # (n,)
                else:
                    chunks.extend(f.to_ndarray()[0] for f in resampler.resample(frame))  # (n,) each
                if frame.time is not None and frame.time + frame.samples / frame.sample_rate >= end_s:
                    audio_done = True
        if video_done and audio_done:
            break
    if not video_done:
        if prev is None:
            raise MediaError(path, "no decodable video frame in the window")
        for i in range(next_target, num_frames):  # the video ended before the window: hold its last frame
            chosen[i] = rgb_of(prev)
    frames = np.stack(chosen)  # (T, size, size, 3)

    n = round(sample_rate * clip_seconds)
    if astream is None:
        return DecodedClip(frames, np.zeros(n, dtype=np.float32), has_audio=False)
    chunks.extend(f.to_ndarray()[0] for f in resampler.resample(None))  # flush the resampler
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    offset = round(((audio_t0 if audio_t0 is not None else start_s) - start_s) * sample_rate)
    if offset < 0:  # decoding began before start_s (seek lands on an earlier packet): drop the excess
        audio = audio[-offset:]
    elif offset > 0:  # the audio stream begins after start_s: silence until it does
        audio = np.concatenate([np.zeros(offset, dtype=np.float32), audio])
    waveform = np.zeros(n, dtype=np.float32)
    waveform[: min(n, audio.size)] = audio[:n]
    return DecodedClip(frames, waveform, has_audio=True)
