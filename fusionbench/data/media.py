"""Decode one clip with PyAV: T frames sampled over a time window, and its mono waveform at a fixed rate.

Rules (fusionbench's own where the papers differ):

- **Time origin.** Times are seconds from the file's first timestamp (``container.start_time``), as ``ffmpeg -ss``
  counts them: an MPEG-PS file whose packets start at 0.6 s has its first frame at 0 s.
- **The window** is ``[start_s, start_s + clip_seconds)``; ``start_s`` is the caller's choice (the datamodule picks
  a random window at train time and a centred one at test). Frame i is the frame on screen at the centre of the
  i-th of T equal segments, ``start_s + (i + 0.5)·clip_seconds / T`` (the last frame whose timestamp is ≤ that
  time), so variable frame rates are sampled by timestamp, not by frame index.
- **Padding.** A target time before the first frame takes the first frame, one at or after the end of the video
  (last timestamp + its duration) repeats the last frame; both are counted in ``padded_frames``. Audio missing
  at either end of the window is zeros, counted in ``padded_audio_s``. A window that starts at or after the end of
  the file is a ``MediaError`` (a ``start_s`` given in milliseconds), not T copies of the last frame and silence.
- **Frames** are resized so the short side is ``size`` and centre-cropped to ``size × size``: the resize and the
  conversion to rgb24 are one swscale call (bilinear, ``SWS_BILINEAR``), on the sampled frames only; the crop is a
  slice of its output. (Unchanged by the speed work of issue 11: frames are bit-identical to commit 7195c19's at any
  source size, so decoded-tensor caches stay valid.)
- **Down-mix: the equal-weight mean of all decoded channels** (LFE included), done here on planar float samples,
  not by FFmpeg's mono matrix (which made stereo +3 dB and 5.1 several times louder): a signal identical on every
  channel keeps its level; one on a single channel of C comes out at 1/C of its amplitude. The mono signal is then
  resampled to ``sample_rate`` by ``av.AudioResampler`` (the window's samples in one call: the same samples as frame
  by frame) and trimmed/zero-padded to exactly ``S = round(sample_rate · clip_seconds)`` samples (AAC decodes to
  whole 1024-sample frames).
- **Speed.** Only the window is decoded: seek to the keyframe before ``start_s`` (0.25 s earlier when there is
  audio), stop after the last sampled frame and the window's audio, convert only the T sampled frames to RGB.
  Video packets are held back from the decoder until a target may need them, and those before a keyframe at or
  before the next target are dropped undecoded (the seek margin, an unseekable file read from its start, or an
  intra-only codec such as MJPEG, of which only the frames on screen and the next are decoded). H.264/HEVC decoders
  also skip the frames that no other frame references and that are not on screen at a target. Both choices are
  checked afterwards, against the timestamps of every packet read and (for a dropped stretch) against the picture
  type of the keyframe decoding resumed at, and the window is decoded again without dropping or skipping if one
  was wrong (variable frame rates; a container that flags P-frames as keyframes), so the frames are always those
  of a full decode. An mp4/mov is opened without the probe's decode of its first keyframe (``_probe_options``).
  ``threads`` (default 1: a pool already has one process per core) turns on FFmpeg's frame and slice threading.
  ``benchmarks/decode_speed.py`` measures all of this against commit 7195c19.
- **Errors.** An isolated packet that fails to demux or decode (an MPEG-PS audio packet cut by a seek) is skipped
  and counted in ``decode_errors``; the clip fails only when the window cannot be filled: no decodable video
  frame, audio packets that all fail, or more than ``MAX_ERROR_FRACTION`` of the packets read failing. Every
  failure (missing, empty, unreadable, corrupt file, no video stream unless ``allow_missing_video``, no audio
  stream unless ``allow_missing_audio``) raises ``MediaError(path, reason)``, never a bare PyAV traceback. Files
  are recognised by content, not by extension.
"""
from __future__ import annotations

import bisect
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from fusionbench.errors import UserError

MAX_ERROR_FRACTION = 0.25  # more failed packets than this share of those read: the clip is corrupt, not glitched
MIN_TOLERATED_ERRORS = 16  # … but this many isolated failures are always tolerated (short windows read few packets)
SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})  # decoders that honour skip_frame per frame (libdav1d does not)
SHOW_MARGIN_FRAMES = 1.5  # a frame this many frame intervals before a target may be on screen at it: never skipped
SEEK_MARGIN_S = 0.25  # seek this far before the window when there is audio: its packets may sit before the keyframe's
PAD_TOLERANCE_S = 0.01  # audio gaps shorter than this (timestamp rounding) do not make a clip "padded"
AUDIO_PREROLL_S = 0.5  # audio packets ending this far before the window are not decoded (decoder warm-up margin)
RESAMPLER_PREROLL_S = 0.05  # decoded audio ending this far before the window is not resampled
AUDIO_GAP_TOLERANCE_S = 0.002  # timestamp jitter (mkv stores milliseconds) below this is not a gap
MAX_PROBED_STREAMS = 64  # the probe options cover this many streams (a file with more probes the rest as FFmpeg does)


class MediaError(UserError):
    """A clip that cannot be decoded: ``where`` is the file; ``str()`` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(reason, str(self.path))

    def __reduce__(self):  # picklable across worker processes
        return (MediaError, (self.path, self.reason))


@dataclass
class DecodedClip:
    """One decoded window. The fields after ``has_audio`` have defaults so older constructors keep working."""

    frames: np.ndarray  # uint8 (T, size, size, 3); zeros when the video is absent
    waveform: np.ndarray  # float32 (S,); zeros when the audio is absent
    has_audio: bool  # the file has an audio stream (``audio_present``)
    video_present: bool = True  # the file has a video stream (False only with allow_missing_video)
    padded_frames: int = 0  # of the T frames, those repeating the first/last frame: the video does not cover them
    padded_audio_s: float = 0.0  # seconds of the window's audio that are zeros because the stream does not cover them
    decode_errors: int = 0  # packets that failed to demux or decode and were skipped
    duration_s: float | None = None  # the file's duration as the container states it (None if it does not)
    video_packets_decoded: int = 0  # video packets sent to the decoder (skipped non-reference frames included)

    @property
    def audio_present(self) -> bool:
        return self.has_audio

    @property
    def padded(self) -> bool:
        """Some of the window is padding (audio gaps under ``PAD_TOLERANCE_S`` are timestamp rounding)."""
        return self.padded_frames > 0 or self.padded_audio_s >= PAD_TOLERANCE_S


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
    """Short side → size (bilinear, in swscale), centre crop → uint8 (size, size, 3)."""
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
    allow_missing_video: bool = False,
    threads: int = 1,
) -> DecodedClip:
    """Decode ``num_frames`` frames and ``round(sample_rate·clip_seconds)`` mono samples of the window that starts
    ``start_s`` seconds (not milliseconds) after the file's first timestamp. ``threads`` > 1 turns on the video
    decoder's frame/slice threading (the same frames); 1, the default, suits a pool with one process per core."""
    path = Path(path)
    if not math.isfinite(start_s) or start_s < 0:
        raise MediaError(path, f"window start {start_s} s is not a time in the file")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    container = _open(path)
    args = (path, num_frames, size, sample_rate, clip_seconds, start_s, allow_missing_audio, allow_missing_video,
            threads)
    try:
        with container:
            clip, verified = _decode(container, *args, skip_nonref=True)
        if verified:
            return clip
        with _open(path) as container:  # a skipped frame was on screen at a target: decode every frame
            return _decode(container, *args, skip_nonref=False)[0]
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise MediaError(path, f"decoding failed ({_reason(exc)})") from None


def _open(path: Path) -> av.container.InputContainer:
    """av.open with the checks and errors of this module: missing, empty and non-media files are MediaErrors."""
    if not path.is_file():
        raise MediaError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path), stream_options=_probe_options(path))
    except av.InvalidDataError:
        raise MediaError(path, "not a media file FFmpeg can read (no known container format in its content)") from None
    except av.FFmpegError as exc:
        raise MediaError(path, f"cannot open ({_reason(exc)})") from None


def _probe_options(path: Path) -> list[dict[str, str]] | None:
    """An ISO media file (mp4, mov, m4v, 3gp) states every stream's parameters in its header, so FFmpeg's probe
    need not decode its first keyframe (``skip_frame=all``; 5–50 ms a clip at 360p–1080p here); the decoder reads
    the same parameters from the bitstream. Other containers are probed as FFmpeg does."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:  # unreadable: av.open says why, as a MediaError
        return None
    return [{"skip_frame": "all"}] * MAX_PROBED_STREAMS if head[4:8] == b"ftyp" else None


def decode_job(job: tuple[int, str, dict[str, Any]]) -> tuple[int, DecodedClip | MediaError]:
    """(key, path, decode_clip kwargs) → (key, DecodedClip or the MediaError): for process pools."""
    from fusionbench.data.windows import resolve_window  # a job may name its window instead of its start

    key, path, kwargs = job
    try:
        return key, decode_clip(path, **resolve_window(path, kwargs))
    except MediaError as exc:
        return key, exc


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _seconds(x: float) -> str:
    """2000.0, 2.0, 2.05: at most 3 decimals, at least one."""
    text = f"{x:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Any sample format and layout → float32 (n,): the equal-weight mean of all channels (the rule above)."""
    x = frame.to_ndarray()  # planar (C, n); packed (1, n·C) interleaved
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        x = x.reshape(-1, channels).T  # (C, n)
    kind = x.dtype
    x = x.astype(np.float32, copy=False)
    if kind == np.uint8:
        x = (x - 128.0) / 128.0
    elif kind == np.int16:
        x = x / 32768.0
    elif kind == np.int32:
        x = x / 2147483648.0
    elif kind == np.int64:
        x = x / 9223372036854775808.0
    return x[0] if channels == 1 else x.mean(axis=0, dtype=np.float32)  # (n,)


class _ErrorCounter:
    """Packets read and packets that failed; ``fail`` raises once failures are no longer isolated."""

    def __init__(self, path: Path) -> None:
        self.path, self.read, self.failed = path, 0, 0

    def fail(self) -> None:
        self.failed += 1
        if self.failed > MIN_TOLERATED_ERRORS and self.failed > MAX_ERROR_FRACTION * self.read:
            raise MediaError(self.path, f"corrupt: {self.failed} of {self.read} packets read failed to decode")


def _packets(container: av.container.InputContainer, streams: list, errors: _ErrorCounter) -> Iterator[av.Packet]:
    """Demux the streams; a read error skips ahead (counted), end of file or repeated errors end the stream."""
    while True:
        try:
            for packet in container.demux(*streams):
                errors.read += int(packet.size > 0)  # not the empty packet that flushes a decoder at the end
                yield packet
            return
        except av.EOFError:
            return
        except av.FFmpegError:
            errors.read += 1
            errors.fail()
            if errors.failed > MIN_TOLERATED_ERRORS:  # a read that keeps failing: the file ends here
                return


def _decode_packet(packet: av.Packet, errors: _ErrorCounter) -> list:
    try:
        return packet.decode()
    except av.FFmpegError:
        errors.fail()
        return []


def _decode(
    container: av.container.InputContainer, path: Path, num_frames: int, size: int, sample_rate: int,
    clip_seconds: float, start_s: float, allow_missing_audio: bool, allow_missing_video: bool, threads: int,
    skip_nonref: bool,
) -> tuple[DecodedClip | None, bool]:
    """One pass over the window → (clip, True), or (None, False) if a skipped frame was needed after all."""
    vstream = container.streams.video[0] if container.streams.video else None
    astream = container.streams.audio[0] if container.streams.audio else None
    if vstream is None and not allow_missing_video:
        raise MediaError(path, "no video stream")
    if astream is None and not allow_missing_audio:
        raise MediaError(path, "no audio stream (data.on_error=skip leaves such clips out and reports them)")
    if vstream is None and astream is None:
        raise MediaError(path, "no audio or video stream")
    t0 = container.start_time / av.time_base if container.start_time is not None else 0.0
    duration = container.duration / av.time_base if container.duration else None
    if duration is not None and start_s >= duration:
        raise MediaError(path, f"window starts at {_seconds(start_s)} s, after the end of the file "
                               f"({_seconds(duration)} s)")
    end_s = start_s + clip_seconds
    seek_s = max(0.0, start_s - (SEEK_MARGIN_S if astream is not None else 0.0))
    if seek_s > 0:
        try:
            container.seek(int((t0 + seek_s) * av.time_base), backward=True)  # the keyframe at or before seek_s
        except av.FFmpegError:  # an unseekable file (no index): read it from the start instead
            pass
    errors = _ErrorCounter(path)
    n = round(sample_rate * clip_seconds)

    targets = sample_times(num_frames, clip_seconds, start_s)  # (T,)
    video = _VideoWindow(vstream, t0, targets, skip_nonref, threads) if vstream else None
    audio = _AudioWindow(astream, t0, start_s, end_s, sample_rate) if astream else None
    streams = [s for s in (vstream, astream) if s is not None]
    for packet in _packets(container, streams, errors):
        if video is not None and packet.stream is vstream:
            if not video.done:
                video.feed(packet, errors)
        elif audio is not None and not audio.done:
            audio.feed(packet, errors)
        if (video is None or video.done) and (audio is None or audio.done):
            break

    if video is not None:
        video.finish(errors)  # packets still held back (the file ended, or its packets could not be read)
        if video.unconfirmed:  # decoding resumed at a "keyframe" that did not decode as one: decode every packet
            return None, False
        if video.last is None:
            raise MediaError(path, "no decodable video frame in the window"
                                   + (f" ({errors.failed} packets failed)" if errors.failed else ""))
        video_end = video.end_s()
        if start_s >= video_end:  # the container's duration said otherwise: a truncated file, or one that lies
            raise MediaError(path, f"window starts at {_seconds(start_s)} s, after the end of the decodable video "
                                   f"({_seconds(video_end)} s)")
        if not video.verified():
            return None, False  # the caller decodes again without skipping
        frames, padded_frames = video.frames(size)  # (T, size, size, 3)
    else:
        frames, padded_frames = np.zeros((num_frames, size, size, 3), np.uint8), 0

    if audio is not None:
        if audio.decoded == 0 and errors.failed:
            raise MediaError(path, f"no decodable audio in the window ({errors.failed} packets failed)")
        if video is None and audio.audio_t0 is None:  # audio only, and none of it reaches the window
            raise MediaError(path, f"window starts at {_seconds(start_s)} s, after the end of the audio")
        waveform, valid = audio.waveform(n)  # (S,)
        padded_audio_s = (n - valid) / sample_rate
    else:
        waveform, padded_audio_s = np.zeros(n, dtype=np.float32), 0.0
    clip = DecodedClip(
        frames, waveform, has_audio=audio is not None, video_present=video is not None,
        padded_frames=padded_frames, padded_audio_s=float(padded_audio_s), decode_errors=errors.failed,
        duration_s=duration, video_packets_decoded=video.decoded if video is not None else 0,
    )
    return clip, True


class _VideoWindow:
    """The frames on screen at the target times, converted to RGB only when chosen.

    Packets are held back from the decoder until a target may need them: a keyframe at or before the next target
    that no frame has been chosen for yet makes every packet held before it useless (no frame before that keyframe
    can be on screen at a later target), so those are dropped undecoded (``lazy``)."""

    EPS = 1e-6

    def __init__(self, stream: av.video.stream.VideoStream, t0: float, targets: np.ndarray, skip_nonref: bool,
                 threads: int = 1):
        self.stream, self.t0, self.targets = stream, t0, targets  # (T,) seconds from the file's start
        context = stream.codec_context
        if threads > 1:
            context.thread_type, context.thread_count = "AUTO", threads
        else:
            context.thread_count = 1  # frame threading makes tiny clips 2–3× slower
        self.chosen: list[av.VideoFrame | None] = [None] * len(targets)
        self.next, self.last, self.first = 0, None, None
        self.last_t = -math.inf
        rate = stream.average_rate or stream.guessed_rate
        self.frame_s = float(1 / rate) if rate else 0.0
        self.skip_allowed = skip_nonref and self.frame_s > 0 and context.name in SKIP_NONREF_CODECS
        self.skipping = self.skipped_any = False
        self.hold_allowed = skip_nonref  # hold packets back, and drop those a later keyframe makes useless
        self.lazy = False  # packets are being held back
        self.held: list[tuple[av.Packet, float | None]] = []
        self.dropped_any = self.replaced = False
        self.unconfirmed: list[float] = []  # times of keyframes decoding resumed at, not yet decoded as I-frames
        self.sent: list[float] = []  # the timestamp of every packet read: sent to the decoder, skipped or dropped
        self.decoded = 0  # packets sent to the decoder
        self.tb = float(stream.time_base) if stream.time_base else 0.0
        self.target_list = targets.tolist()
        self.done = False

    def feed(self, packet: av.Packet, errors: _ErrorCounter) -> None:
        t_packet = packet.pts * self.tb - self.t0 if packet.pts is not None else None
        if t_packet is not None:
            self.sent.append(t_packet)
        key_for_next = (self.hold_allowed and packet.is_keyframe and t_packet is not None
                        and t_packet <= self.targets[self.next] + self.EPS)  # every target left is at or after it
        if key_for_next:
            self.replaced = bool(self.held)  # packets dropped for this keyframe: it must decode as one (_take)
            self.dropped_any |= self.replaced
            self.lazy, self.held = True, [(packet, t_packet)]  # what came before is never on screen at a target
            return
        if self.lazy:
            if t_packet is not None and t_packet <= self.targets[self.next] + self.EPS:
                self.held.append((packet, t_packet))  # a keyframe at or before the next target may still come
                return
            self._release(errors)  # this packet shows after the next target (or has no time): decode from here on
            if self.done:
                return
        self._send(packet, t_packet, errors)

    def _release(self, errors: _ErrorCounter) -> None:
        """Send the packets held back, in order; decoding goes on packet by packet from here."""
        held, self.held = self.held, []
        self.lazy = False
        if self.replaced:
            self.unconfirmed.append(held[0][1])
            self.replaced = False
        for packet, t_packet in held:
            self._send(packet, t_packet, errors)
            if self.done:
                return

    def finish(self, errors: _ErrorCounter) -> None:
        """The packets are all read: decode those still held back."""
        if self.held and not self.done:
            self._release(errors)

    def _send(self, packet: av.Packet, t_packet: float | None, errors: _ErrorCounter) -> None:
        if t_packet is None:
            self.skip_allowed = False  # nothing to decide (or verify) by: decode every frame from here on
        skip = self.skip_allowed and not self._may_show(t_packet)
        if skip != self.skipping:  # the decoder drops non-reference frames (cheap) while this is on
            self.stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            self.skipping = skip
        self.skipped_any |= skip
        self.decoded += int(packet.size > 0)
        for frame in _decode_packet(packet, errors):
            self._take(frame)
            if self.done:
                return

    def _take(self, frame: av.VideoFrame) -> None:
        t = frame.time - self.t0 if frame.time is not None else max(self.last_t + self.frame_s, 0.0)
        T = len(self.targets)
        while self.next < T and t > self.targets[self.next] + self.EPS:  # the previous frame was on screen then
            self.chosen[self.next] = self.last if self.last is not None else frame
            self.next += 1
        if self.unconfirmed and frame.key_frame and frame.pict_type == av.video.frame.PictureType.I:
            self.unconfirmed = [u for u in self.unconfirmed if abs(u - t) > 1e-4]
        if self.first is None:
            self.first = (t, frame)
        self.last, self.last_t = frame, t
        self.done = self.next == T

    def end_s(self) -> float:
        """The end of the last decoded frame: its timestamp plus its duration."""
        dur = float(self.last.duration * self.last.time_base) if self.last.duration and self.last.time_base else 0.0
        return self.last_t + (dur or self.frame_s)

    def _may_show(self, t: float) -> bool:
        """Whether the frame at t could be on screen at a target, guessing that the next frame follows within
        ``SHOW_MARGIN_FRAMES`` intervals (``verified`` checks the guess)."""
        i = bisect.bisect_left(self.target_list, t - self.EPS)  # the first target at or after t
        return i < len(self.target_list) and self.target_list[i] < t + SHOW_MARGIN_FRAMES * self.frame_s

    def verified(self) -> bool:
        """Whether each chosen frame is the one on screen by the timestamps of all packets read (sent, skipped or
        dropped), and each keyframe that decoding resumed at after dropping packets decoded as a keyframe (a
        container that flags frames as keyframes wrongly would leave them without their references)."""
        if self.unconfirmed:
            return False
        if not (self.skipped_any or self.dropped_any):
            return True
        sent = np.sort(np.asarray(self.sent))  # (P,)
        for target, frame in zip(self.targets, self.chosen):
            frame = frame if frame is not None else self.last  # past the end: the last frame is held
            i = int(np.searchsorted(sent, target + self.EPS)) - 1  # the latest packet at or before the target
            want = sent[max(i, 0)]  # none before it: the first frame
            if frame.time is None or abs(frame.time - self.t0 - want) > 1e-4:
                return False
        return True

    def frames(self, size: int) -> tuple[np.ndarray, int]:
        """(T, size, size, 3) uint8 and how many targets lie outside the decoded video (first/last frame repeated)."""
        end = self.end_s()
        for i in range(self.next, len(self.targets)):  # the video ended before these targets: hold its last frame
            self.chosen[i] = self.last
        first_t = self.first[0]
        padded = int(sum(1 for t in self.targets if t >= end - self.EPS or t < first_t - self.EPS))
        rgb: dict[int, np.ndarray] = {}  # a frame chosen for several targets is converted once
        for f in self.chosen:
            if id(f) not in rgb:
                rgb[id(f)] = _to_rgb(f, size)  # (size, size, 3)
        return np.stack([rgb[id(f)] for f in self.chosen]), padded  # (T, size, size, 3)


def _on_grid(lead_s: float, source_rate: int, rate: int) -> int:
    """Source samples to drop from audio that begins ``lead_s`` before the window so that it begins a whole number
    of output samples before it: then no output sample is shifted by a fraction of a sample (up to 31 µs at 16 kHz),
    whatever the seek point. Exact when ``lead_s`` is on the source grid and ``source_rate`` is a multiple of ``rate``;
    otherwise within half a source sample."""
    whole = math.floor(lead_s * rate + 1e-9) / rate  # the output-grid time at or after the audio's first sample
    return max(0, round((lead_s - whole) * source_rate))


class _AudioWindow:
    """Decoded audio from just before the window to its end, down-mixed (channel mean) and resampled."""

    def __init__(self, stream: av.audio.stream.AudioStream, t0: float, start_s: float, end_s: float,
                 sample_rate: int) -> None:
        self.t0, self.start_s, self.end_s, self.rate = t0, start_s, end_s, sample_rate
        self.tb = float(stream.time_base) if stream.time_base else 0.0
        self.resampler: av.AudioResampler | None = None
        self.chunks: list[np.ndarray] = []  # output-rate samples
        self.queued: list[np.ndarray] = []  # source-rate samples not yet resampled, at queued_rate
        self.queued_rate = 0
        self.audio_t0: float | None = None  # time of the first sample kept
        self.decoded = 0  # frames decoded (any time)
        self.next_t = 0.0  # the time of the next sample the stream should deliver
        self.gaps: list[tuple[float, float]] = []  # (from, to) seconds of silence put where packets were lost
        self.done = False

    def feed(self, packet: av.Packet, errors: _ErrorCounter) -> None:
        if packet.pts is not None and packet.duration:
            packet_end = (packet.pts + packet.duration) * self.tb - self.t0
            if packet_end < self.start_s - AUDIO_PREROLL_S:  # long before the window: not even decoded
                return
        for frame in _decode_packet(packet, errors):
            self.decoded += 1
            t = frame.time - self.t0 if frame.time is not None else None
            if t is not None and t + frame.samples / frame.sample_rate < self.start_s - RESAMPLER_PREROLL_S:
                continue  # warm-up only
            mono = to_mono(frame)  # (n,)
            if self.audio_t0 is None:
                if t is not None and t < self.start_s:  # start on the output grid of start_s (see _on_grid)
                    skip = _on_grid(self.start_s - t, frame.sample_rate, self.rate)
                    mono, t = mono[skip:], t + skip / frame.sample_rate
                self.audio_t0 = self.next_t = t if t is not None else self.start_s
            elif t is not None:  # keep every sample at its timestamp: a lost packet leaves a gap, not a shift
                gap = round((t - self.next_t) * frame.sample_rate)
                if gap > AUDIO_GAP_TOLERANCE_S * frame.sample_rate:
                    self.gaps.append((self.next_t, t))
                    self._add(np.zeros(gap, dtype=np.float32), frame.sample_rate)  # (gap,)
                    self.next_t += gap / frame.sample_rate
                elif gap < -AUDIO_GAP_TOLERANCE_S * frame.sample_rate:  # overlaps what came before: drop that part
                    mono = mono[-gap:]
            self._add(mono, frame.sample_rate)
            self.next_t += mono.size / frame.sample_rate
            if t is not None and t + frame.samples / frame.sample_rate >= self.end_s:
                self.done = True

    def _add(self, mono: np.ndarray, rate: int) -> None:
        """Queue source-rate mono samples; they are resampled together (``_resample``) when the rate changes or the
        window is complete: one call instead of one per frame, the same samples (swresample is a streaming filter)."""
        if rate == self.rate and self.resampler is None:
            self.chunks.append(mono)
            return
        if self.resampler is None:
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        if self.queued and rate != self.queued_rate:
            self._resample()
        self.queued.append(mono)
        self.queued_rate = rate

    def _resample(self) -> None:
        if not self.queued:
            return
        mono = np.concatenate(self.queued) if len(self.queued) > 1 else self.queued[0]  # (n,)
        self.queued = []
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono[None]), format="flt", layout="mono")  # (1, n)
        frame.sample_rate = self.queued_rate
        self.chunks.extend(f.to_ndarray()[0] for f in self.resampler.resample(frame))  # (n',) each

    def waveform(self, n: int) -> tuple[np.ndarray, int]:
        """Exactly n samples from ``start_s`` (float32 (n,)) and how many of them the stream delivered."""
        if self.resampler is not None:
            self._resample()
            self.chunks.extend(f.to_ndarray()[0] for f in self.resampler.resample(None))  # flush
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)
        offset = round(((self.audio_t0 if self.audio_t0 is not None else self.start_s) - self.start_s) * self.rate)
        if offset < 0:  # decoding began before start_s: drop the excess
            audio = audio[-offset:]
            offset = 0
        waveform = np.zeros(n, dtype=np.float32)
        kept = max(0, min(n - offset, audio.size))
        waveform[offset : offset + kept] = audio[:kept]  # zeros before the stream begins and after it ends
        lost = sum(max(0.0, min(b, self.end_s) - max(a, self.start_s)) for a, b in self.gaps)  # gaps in the window
        return waveform, kept - round(lost * self.rate)
