"""Real-download media: containers × codecs, sample rates, down-mix, VFR, padding, MPEG-PS seeks, broken files.

Every fixture is written here with PyAV (64×48, 1–4 s). Frame content: a flat grey whose level says which
0.125 s segment of the source it shows; audio: a 440 Hz sine whose level and phase are known.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fusionbench.data import media
from fusionbench.data.media import MediaError, decode_clip, sample_times, to_mono

W, H = 64, 48
HZ, AMP = 440.0, 0.3
RMS = AMP / np.sqrt(2)  # of the written sine
QUIET = {"libx265": {"x265-params": "log-level=none"}, "libsvtav1": {"svtav1-params": "log-level=0"}}


def _encoder(*names: str) -> str:
    """The first encoder of ``names`` this PyAV build has; skip the test (with the reason) if none."""
    for name in names:
        try:
            av.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
            continue
    pytest.skip(f"this PyAV build has no {' / '.join(names)} encoder")


def level_at(t: float | np.ndarray) -> np.ndarray:
    """The grey level written for source time t: one level per 0.125 s segment, repeating every 2 s."""
    return 16 + 13 * (np.floor(np.asarray(t) * 8 + 1e-9) % 16)


def shown(targets: np.ndarray, fps: int) -> np.ndarray:
    """The level of the constant-rate source frame on screen at each target time."""
    return level_at(np.floor(targets * fps + 1e-9) / fps)


def sine(n: int, rate: int, t0: float = 0.0) -> np.ndarray:
    return (AMP * np.sin(2 * np.pi * HZ * (t0 + np.arange(n) / rate))).astype(np.float32)  # (n,)


def write(
    path: Path, fmt: str, vcodec: str | None, acodec: str | None = None, *, fps: int = 8, seconds: float = 2.0,
    rate: int = 16000, layout: str = "mono", signal: np.ndarray | None = None, pts_ms: list[int] | None = None,
    levels: list[float] | None = None, vopts: dict | None = None,
) -> Path:
    """One clip: ``vcodec`` video (None: none) and ``acodec`` audio (None: none) in container ``fmt``.

    Video: constant ``fps`` frames levelled by ``level_at``, or (VFR) frames at ``pts_ms`` with ``levels``.
    Audio: ``signal`` (C, n), by default the sine on every channel of ``layout``.
    """
    with av.open(str(path), "w", format=fmt) as c:
        video = None
        if vcodec is not None:
            video = c.add_stream(vcodec, rate=fps, options={**QUIET.get(vcodec, {}), **(vopts or {})})
            video.width, video.height = W, H
            video.pix_fmt = "yuvj420p" if vcodec == "mjpeg" else "yuv420p"
            video.codec_context.thread_count = 1
            if pts_ms is not None:
                video.codec_context.time_base = Fraction(1, 1000)
        audio = c.add_stream(acodec, rate=rate, layout=layout) if acodec is not None else None
        if video is not None:
            times = [p / 1000 for p in pts_ms] if pts_ms is not None else [i / fps for i in range(round(seconds * fps))]
            for i, t in enumerate(times):
                value = levels[i] if levels is not None else level_at(t)
                frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), value, np.uint8), format="rgb24")
                vfr = pts_ms is not None
                frame.pts, frame.time_base = (pts_ms[i], Fraction(1, 1000)) if vfr else (i, Fraction(1, fps))
                c.mux(video.encode(frame))
            c.mux(video.encode(None))
        if audio is not None:
            channels = av.AudioLayout(layout).nb_channels
            if signal is None:
                signal = np.tile(sine(round(rate * seconds), rate), (channels, 1))  # (C, n)
            step = audio.codec_context.frame_size or 1024
            for start in range(0, signal.shape[1], step):
                chunk = np.ascontiguousarray(signal[:, start : start + step], dtype=np.float32)  # (C, step)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate, frame.pts = rate, start
                c.mux(audio.encode(frame))
            c.mux(audio.encode(None))
    return path


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def peak_hz(x: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / x.size)


def decode(path: Path, **kw) -> media.DecodedClip:
    return decode_clip(path, **{"num_frames": 16, "size": 32, "sample_rate": 16000, "clip_seconds": 2.0, **kw})


# --- 1. containers × codecs --------------------------------------------------------------------------------------
MATRIX = [  # (extension, muxer, video encoders (first available), audio encoder, rate, layout, fps)
    ("mp4", "mp4", ("libx264",), "aac", 44100, "stereo", 8),
    ("mp4", "mp4", ("libx265",), "aac", 22050, "mono", 8),  # HEVC
    ("mp4", "mp4", ("libaom-av1", "libsvtav1", "librav1e"), "aac", 16000, "stereo", 8),  # AV1
    ("mkv", "matroska", ("mpeg4",), "flac", 8000, "stereo", 8),  # MPEG-4 Part 2
    ("mkv", "matroska", ("libx264",), "libmp3lame", 44100, "stereo", 8),
    ("webm", "webm", ("libvpx-vp9",), "libopus", 48000, "stereo", 8),
    ("avi", "avi", ("mjpeg",), "pcm_s16le", 16000, "stereo", 8),  # packed s16 PCM
    ("avi", "avi", ("mpeg4",), "mp2", 48000, "mono", 8),
    ("mov", "mov", ("libx264",), "pcm_s16le", 48000, "stereo", 8),
    ("mov", "mov", ("mjpeg",), "aac", 44100, "mono", 8),
    ("mpeg", "mpeg", ("mpeg2video",), "mp2", 48000, "stereo", 25),  # MPEG-PS; MPEG-2 allows 25 fps, not 8
]


@pytest.mark.parametrize("ext, fmt, vcodecs, acodec, rate, layout, fps", MATRIX,
                         ids=[f"{m[0]}-{'av1' if len(m[2]) > 1 else m[2][0]}-{m[3]}-{m[4]}-{m[5]}" for m in MATRIX])
def test_container_codec_matrix(tmp_path: Path, ext, fmt, vcodecs, acodec, rate, layout, fps) -> None:
    vcodec, acodec = _encoder(*vcodecs), _encoder(acodec)
    vopts = {"b": "2M"} if vcodec in ("mpeg2video", "mpeg4") else None  # near-lossless flat greys
    path = write(tmp_path / f"clip.{ext}", fmt, vcodec, acodec, fps=fps, rate=rate, layout=layout, vopts=vopts)
    clip = decode(path)
    assert clip.frames.shape == (16, 32, 32, 3) and clip.frames.dtype == np.uint8
    levels = clip.frames.reshape(16, -1).mean(1)
    assert np.abs(levels - shown(sample_times(16, 2.0), fps)).max() < 6, levels.round()  # the right frame, in order
    assert clip.waveform.shape == (32000,) and clip.has_audio and clip.audio_present and clip.video_present
    assert abs(peak_hz(clip.waveform, 16000) - HZ) < 1.0
    inner = clip.waveform[1600:-1600]  # codec delay and the resampler's edges stay out of the level check
    assert abs(rms(inner) / RMS - 1) < 0.05  # one channel's level, whatever the layout (the down-mix rule)
    assert clip.padded_frames == 0 and clip.decode_errors == 0 and not clip.padded
    later = decode(path, num_frames=8, clip_seconds=1.0, start_s=1.0)  # a seek into the clip
    assert np.abs(later.frames.reshape(8, -1).mean(1) - shown(sample_times(8, 1.0, 1.0), fps)).max() < 6
    assert abs(rms(later.waveform[1600:-1600]) / RMS - 1) < 0.05 and not later.padded


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_sample_rates_resampled_to_the_config_rate(tmp_path: Path, rate: int) -> None:
    path = write(tmp_path / "r.mkv", "matroska", "mpeg4", "flac", rate=rate)  # lossless audio: tight tolerances
    for target in (16000, 22050):
        wave = decode(path, sample_rate=target).waveform
        assert wave.shape == (2 * target,)
        assert abs(peak_hz(wave, target) - HZ) < 0.6
        assert abs(rms(wave[target // 10 : -target // 10]) / RMS - 1) < 0.01
        t = 1.0 + np.arange(200) / target  # phase: the sample at 1 s is the sine at 1 s (no shift from resampling)
        assert np.abs(wave[target : target + 200] - AMP * np.sin(2 * np.pi * HZ * t)).max() < 0.02


@pytest.mark.parametrize("rate", [44100, 48000])
def test_audio_after_a_seek_is_on_the_output_grid(tmp_path: Path, rate: int) -> None:
    """Sample k of the window is the source at start_s + k / 16000 for any start_s (to the source grid)."""
    path = write(tmp_path / "s.mov", "mov", "mpeg4", "pcm_s16le", seconds=3.0, rate=rate)  # mkv: ms timestamps
    for start in (0.3 + 7 / rate, 1.0 + 13 / rate):
        wave = decode(path, clip_seconds=1.0, num_frames=4, start_s=start).waveform
        want = AMP * np.sin(2 * np.pi * HZ * (start + np.arange(16000) / 16000))
        # exact on 48 kHz; within half a 44.1 kHz sample (≤ 0.0094 here); half a 16 kHz sample off would be 0.026
        assert np.abs(wave - want)[50:-50].max() < (0.004 if rate == 48000 else 0.011), start


# --- 2. down-mix: the mean of the channels ------------------------------------------------------------------------
@pytest.mark.parametrize("layout, channels", [("stereo", 2), ("5.1", 6)])
@pytest.mark.parametrize("fmt, ext, acodec", [("matroska", "mkv", "flac"), ("mov", "mov", "pcm_s16le")])
def test_downmix_is_the_channel_mean(tmp_path: Path, layout, channels, fmt, ext, acodec) -> None:
    s = sine(32000, 16000)
    same = write(tmp_path / f"same.{ext}", fmt, "mpeg4", acodec, layout=layout, signal=np.tile(s, (channels, 1)))
    assert abs(rms(decode(same).waveform) / rms(s) - 1) < 0.01  # identical on every channel: same level
    one = np.zeros((channels, s.size), np.float32)
    one[0] = s  # front left only
    left = write(tmp_path / f"left.{ext}", fmt, "mpeg4", acodec, layout=layout, signal=one)
    assert abs(rms(decode(left).waveform) / (rms(s) / channels) - 1) < 0.01  # 1/C of the amplitude (½ for stereo)


def test_to_mono_handles_packed_and_planar_integer_samples() -> None:
    lr = np.stack([np.full(4, 16384, np.int16), np.zeros(4, np.int16)])  # (2, 4): L = 0.5, R = 0
    packed = av.AudioFrame.from_ndarray(lr.T.reshape(1, -1).copy(), format="s16", layout="stereo")  # (1, 8)
    planar = av.AudioFrame.from_ndarray(lr.copy(), format="s16p", layout="stereo")
    for frame in (packed, planar):
        assert np.allclose(to_mono(frame), 0.25) and to_mono(frame).dtype == np.float32


# --- 3. variable frame rate, clips longer than the window -----------------------------------------------------------
def test_vfr_frames_are_sampled_by_timestamp(tmp_path: Path) -> None:
    pts = [0, 40, 300, 330, 360, 800, 1210, 1240, 1700, 1990]  # irregular: bursts and gaps
    levels = [16 + 22 * i for i in range(len(pts))]
    path = write(tmp_path / "vfr.mkv", "matroska", "libx264", "flac", pts_ms=pts, levels=levels)
    clip = decode(path, num_frames=8)
    on_screen = [max(i for i, p in enumerate(pts) if p / 1000 <= t) for t in sample_times(8, 2.0)]
    assert on_screen == [1, 4, 4, 5, 5, 7, 7, 8]  # by time, not by index (an index rule would give 0, 1, 2, …)
    assert np.abs(clip.frames.reshape(8, -1).mean(1) - np.take(levels, on_screen)).max() < 4
    assert clip.padded_frames == 0


def test_video_that_starts_late_holds_its_first_frame_counted(tmp_path: Path) -> None:
    pts = [600 + 125 * i for i in range(12)]  # the video starts 0.6 s after the audio
    levels = [16 + 18 * i for i in range(12)]
    path = write(tmp_path / "late.mkv", "matroska", "libx264", "flac", pts_ms=pts, levels=levels)
    clip = decode(path, num_frames=8)
    assert clip.padded_frames == 2  # 0.125 s and 0.375 s are before the first frame …
    assert np.abs(clip.frames[:3].reshape(3, -1).mean(1) - levels[0]).max() < 4  # … which they show
    assert not clip.padded_audio_s


def test_a_window_inside_a_longer_clip_starts_at_start_s(tmp_path: Path) -> None:
    burst = sine(6 * 16000, 16000) * 0.1
    burst[4 * 16000 : 4 * 16000 + 1600] *= 10  # a loud 100 ms at 4.0 s
    path = write(tmp_path / "long.mp4", "mp4", "libx264", "aac", seconds=6.0, signal=burst[None])
    clip = decode(path, num_frames=8, start_s=3.3)
    assert np.abs(clip.frames.reshape(8, -1).mean(1) - level_at(sample_times(8, 2.0, 3.3))).max() < 4
    onset = np.flatnonzero(np.convolve(clip.waveform**2, np.ones(80) / 80, "same") > 0.02)[0]
    assert abs(onset - 0.7 * 16000) < 80  # 4.0 s − 3.3 s, within 5 ms
    assert not clip.padded


def test_skipped_frames_never_change_the_output(tmp_path: Path, monkeypatch) -> None:
    """Long-GOP H.264 with B-frames: non-reference frames off the targets are skipped; the frames must equal a full
    decode. With the margin at 0 the guess is wrong for most targets: the check must notice and decode again.
    """
    rng = np.random.default_rng(0)
    tex = rng.integers(40, 200, (H, W + 2 * 48, 3), dtype=np.uint8)
    path = tmp_path / "bframes.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=8, options={"x264-params": "keyint=250:bframes=3:threads=1"})
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        for i in range(48):  # 6 s of a panning texture: B-frames, one keyframe
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[:, 2 * i : 2 * i + W]), format="rgb24")
            frame.pts = i
            c.mux(v.encode(frame))
        c.mux(v.encode(None))
    with av.open(str(path)) as c:  # the oracle: every frame, chosen by the sampling rule
        decoded = list(c.decode(video=0))
        every = [(f.time, media._to_rgb(f, 32)) for f in decoded]
    assert sum(int(f.pict_type) == int(av.video.frame.PictureType.B) for f in decoded) > 10
    assert sum(f.key_frame for f in decoded) == 1
    passes, skipped, real_decode = [], [], media._decode

    def spy(*args, skip_nonref):
        passes.append(skip_nonref)
        return real_decode(*args, skip_nonref=skip_nonref)

    real_send = media._VideoWindow._send

    def send(self, packet, t_packet, errors):  # records whether the decoder was told to skip this packet's frame
        real_send(self, packet, t_packet, errors)
        skipped.append(self.skipping)

    monkeypatch.setattr(media, "_decode", spy)
    monkeypatch.setattr(media._VideoWindow, "_send", send)
    for margin, redecoded in ((media.SHOW_MARGIN_FRAMES, False), (0.0, True)):
        monkeypatch.setattr(media, "SHOW_MARGIN_FRAMES", margin)
        for start in (2.9, 4.0):
            passes.clear(), skipped.clear()
            clip = decode(path, num_frames=8, start_s=start, allow_missing_audio=True)
            want = [[rgb for t, rgb in every if t <= target + 1e-6][-1] for target in sample_times(8, 2.0, start)]
            assert np.array_equal(clip.frames, np.stack(want)), (margin, start)
            assert any(skipped) and passes == ([True, False] if redecoded else [True]), (margin, start, passes)


# --- 3b. decoding only what the window needs -------------------------------------------------------------------------
GOP_1S = {"x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=2:threads=1:mbtree=0"}  # a keyframe each second


def _oracle(path: Path, num_frames: int, start_s: float, size: int = 32) -> np.ndarray:
    """Every frame decoded from the start of the file, the one on screen at each target taken (the sampling rule)."""
    with av.open(str(path)) as c:
        t0 = (c.start_time or 0) / av.time_base  # times count from the file's first timestamp
        every = [(f.time - t0, media._to_rgb(f, size)) for f in c.decode(video=0)]
    return np.stack([[rgb for t, rgb in every if t <= target + 1e-6][-1]
                     for target in sample_times(num_frames, 2.0, start_s)])  # (T, size, size, 3)


def _packets_from(path: Path, t: float) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(video=0) if p.size and p.pts * p.time_base >= t - 1e-6)


@pytest.mark.parametrize("vcodec, vopts", [("libx264", GOP_1S), ("mjpeg", None)])
def test_only_the_window_is_decoded(tmp_path: Path, vcodec: str, vopts: dict | None) -> None:
    """A window at 4 s: the 0.25 s audio seek margin lands on the keyframe at 3 s; the packets before the keyframe at
    4 s are dropped undecoded (H.264), and of an intra-only codec (MJPEG) only the frames on screen are decoded."""
    path = write(tmp_path / "gop.mkv", "matroska", vcodec, "aac", fps=8, seconds=6.0, vopts=vopts)
    clip = decode(path, num_frames=8, start_s=4.0)
    assert np.array_equal(clip.frames, _oracle(path, 8, 4.0))
    after_key = _packets_from(path, 4.0)  # 16 packets from the keyframe at 4 s to the end
    assert after_key == 16
    if vcodec == "libx264":
        assert clip.video_packets_decoded <= after_key  # the old decoder sent the 8 packets of 3–4 s too
    else:
        assert clip.video_packets_decoded <= 8 + 8  # 8 targets: each frame on screen and the one after it


NO_SCENECUT = {"g": "8", "bf": "0", "sc_threshold": "1000000000"}  # MPEG-4 P-frames (flat frames that change level
# every frame are all I-frames otherwise)


@pytest.mark.parametrize("vcodec, vopts", [("libx264", GOP_1S), ("mpeg4", NO_SCENECUT)])
def test_a_lying_keyframe_flag_is_decoded_again_without_dropping(tmp_path: Path, monkeypatch, vcodec: str,
                                                                 vopts: dict) -> None:
    """A file that flags every packet as a keyframe (NUT keeps the flags as written; real keyframes at 0 and 1 s):
    decoding resumes at the frame of 0.5 s, which does not decode as an I-frame (H.264 shows nothing until the real
    keyframe; MPEG-4 shows the P-frame without its reference), so the window is decoded again dropping nothing."""
    path = tmp_path / "lying.nut"
    with av.open(str(path), "w", format="nut") as c:
        v = c.add_stream(vcodec, rate=8, options=vopts)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        for i in range(16):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), level_at(i / 8), np.uint8), format="rgb24")
            frame.pts = i
            for packet in v.encode(frame) + (v.encode(None) if i == 15 else []):
                packet.is_keyframe = True
                c.mux(packet)
    with av.open(str(path)) as c:
        assert all(p.is_keyframe for p in c.demux(video=0) if p.size)
    passes, real_decode = [], media._decode

    def spy(*args, skip_nonref):
        passes.append(skip_nonref)
        return real_decode(*args, skip_nonref=skip_nonref)

    monkeypatch.setattr(media, "_decode", spy)
    clip = decode(path, num_frames=2, allow_missing_audio=True)  # targets 0.5 and 1.5 s
    assert passes == [True, False]
    assert np.array_equal(clip.frames, _oracle(path, 2, 0.0))


def test_two_decoder_threads_give_the_same_clip(tmp_path: Path) -> None:
    path = write(tmp_path / "b.mp4", "mp4", "libx264", "aac", fps=8, seconds=4.0, vopts=GOP_1S)
    for start in (0.0, 1.1, 2.0):
        one, two = decode(path, start_s=start), decode(path, start_s=start, threads=2)
        assert np.array_equal(one.frames, two.frames) and np.array_equal(one.waveform, two.waveform)
        assert one.padded_frames == two.padded_frames


def test_frames_are_resized_in_swscale_bilinear_then_centre_cropped(tmp_path: Path) -> None:
    """Short side → size in one swscale call (rgb24, bilinear), then the centre crop: the reference path is PyAV's own
    ``to_ndarray(width, height, interpolation)`` on every frame of a textured 64×48 clip (→ 43×32 → 32×32)."""
    path, rng = tmp_path / "wide.mp4", np.random.default_rng(0)
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=8, options={"x264-params": "threads=1:mbtree=0", "crf": "10"})
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        for i in range(16):
            img = rng.integers(0, 256, (H // 4, W // 4, 3), np.uint8).repeat(4, 0).repeat(4, 1)  # (H, W, 3)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            c.mux(v.encode(frame))
        c.mux(v.encode(None))
    clip = decode(path, allow_missing_audio=True)
    with av.open(str(path)) as c:
        ref = [f.to_ndarray(width=43, height=32, format="rgb24", interpolation="BILINEAR")[:, 5:37]
               for f in c.decode(video=0)]  # (32, 32, 3) each
    assert clip.frames.shape == (16, 32, 32, 3)
    assert np.array_equal(clip.frames, np.stack(ref))  # 16 targets at 8 fps: every frame once


def test_resampling_the_window_at_once_equals_frame_by_frame(tmp_path: Path) -> None:
    """The mono window is resampled in one call; swresample is a streaming filter, so the samples are those of
    resampling each decoded frame in turn (the previous code)."""
    path = write(tmp_path / "a.mkv", "matroska", "mpeg4", "aac", rate=48000, layout="stereo", seconds=2.0)
    clip = decode(path)
    resampler, out = av.AudioResampler(format="flt", layout="mono", rate=16000), []
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            mono = av.AudioFrame.from_ndarray(to_mono(frame)[None], format="flt", layout="mono")
            mono.sample_rate = frame.sample_rate
            out += [f.to_ndarray()[0] for f in resampler.resample(mono)]
    out += [f.to_ndarray()[0] for f in resampler.resample(None)]
    assert np.array_equal(clip.waveform, np.concatenate(out)[:32000])


def test_iso_media_is_opened_without_a_probe_decode_and_decodes_the_same(tmp_path: Path, monkeypatch) -> None:
    """mp4/mov headers carry every stream's parameters: FFmpeg's probe skips decoding their first keyframe; the clip
    is the one a fully probed container gives. Other containers are probed as FFmpeg does."""
    mp4 = write(tmp_path / "a.mp4", "mp4", "libx264", "aac", fps=8, seconds=4.0, vopts=GOP_1S)
    mkv = write(tmp_path / "a.mkv", "matroska", "libx264", "aac", fps=8, seconds=4.0, vopts=GOP_1S)
    assert media._probe_options(mp4) and media._probe_options(mkv) is None
    with media._open(mp4) as c:
        assert c.streams.video[0].codec_context.pix_fmt is None  # the probe decoded nothing
    fast = [decode(mp4, start_s=s) for s in (0.0, 1.3)]
    monkeypatch.setattr(media, "_probe_options", lambda path: None)
    for clip, full in zip(fast, [decode(mp4, start_s=s) for s in (0.0, 1.3)]):
        assert np.array_equal(clip.frames, full.frames) and np.array_equal(clip.waveform, full.waveform)


def test_a_header_that_cannot_be_read_is_left_to_ffmpegs_probe(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path / "a.mp4", "mp4", "libx264", "aac")
    real_open = Path.open

    def no_read(self, *args, **kwargs):  # as for a file without read permission (root reads any file)
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", no_read)
    assert media._probe_options(path) is None  # av.open then reads (or fails on) the file itself
    assert decode(path).frames.shape == (16, 32, 32, 3)

# --- 4. short clips and windows past the end ------------------------------------------------------------------------
def test_a_short_clip_is_padded_and_the_padding_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "short.mkv", "matroska", "mpeg4", "flac", seconds=1.0)  # 1 s of 2
    clip = decode(path)
    assert clip.padded_frames == 8 and clip.padded
    assert (clip.frames[8:] == clip.frames[7]).all()  # the last frame repeats
    assert abs(clip.padded_audio_s - 1.0) < 1e-3
    assert rms(clip.waveform[:16000]) > 0.2 and not clip.waveform[16000:].any()  # zeros after the end
    tail = decode(path, num_frames=4, clip_seconds=1.0, start_s=0.5)  # half past the end
    assert tail.padded_frames == 2 and abs(tail.padded_audio_s - 0.5) < 1e-3


def test_a_window_after_the_end_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "two.mp4", "mp4", "libx264", "aac")
    with pytest.raises(MediaError, match=r"two\.mp4: window starts at 2000\.0 s, after the end of the file \(2\.0 s\)"):
        decode(path, start_s=2000.0)  # start_s given in milliseconds
    with pytest.raises(MediaError, match="window starts at 2.0 s"):
        decode(path, start_s=2.0)
    with pytest.raises(MediaError, match="not a time in the file"):
        decode(path, start_s=-1.0)


def test_a_truncated_file_decodes_to_where_it_stops(tmp_path: Path) -> None:
    full = write(tmp_path / "full.mkv", "matroska", "mpeg4", "flac", seconds=4.0).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full[: len(full) // 2])
    head = decode(cut)  # the first 2 s are there
    assert np.abs(head.frames.reshape(16, -1).mean(1) - level_at(sample_times(16, 2.0))).max() < 6
    straddle = decode(cut, start_s=1.0)  # … and what is past the cut is padding, counted
    assert straddle.padded_frames > 0 and straddle.padded_audio_s > 0.1
    with pytest.raises(MediaError, match="after the end of the decodable video"):
        decode(cut, start_s=3.0)  # the container still says 4 s


# --- 5. MPEG-PS: seeks and isolated bad packets ----------------------------------------------------------------------
@pytest.fixture
def mpeg_ps(tmp_path: Path) -> Path:
    return write(tmp_path / "dvd.mpg", "mpeg", "mpeg2video", "mp2", fps=25, seconds=4.0, rate=48000,
                 layout="stereo", vopts={"b": "2M"})


def test_mpeg_ps_times_start_at_its_first_timestamp_and_seeks_work(mpeg_ps: Path) -> None:
    with av.open(str(mpeg_ps)) as c:
        assert c.start_time > 0.3 * av.time_base  # the PS muxer starts its clock at ~0.5 s
    for start in (0.0, 1.0, 1.5, 2.0):  # before the fix: a 0.5 s shift, and seeks past 1.5 s failed the clip
        clip = decode(mpeg_ps, num_frames=8, start_s=start)
        assert np.abs(clip.frames.reshape(8, -1).mean(1) - shown(sample_times(8, 2.0, start), 25)).max() < 6
        assert abs(rms(clip.waveform[1600:-1600]) / RMS - 1) < 0.05 and not clip.padded


def _audio_packets(path: Path) -> list[tuple[float, int, int]]:
    """(time, byte position, size) of the audio packets whose position the demuxer knows."""
    with av.open(str(path)) as c:
        t0 = c.start_time / av.time_base
        return [(float(p.pts * p.time_base) - t0, p.pos, p.size) for p in c.demux(audio=0) if p.size and p.pos]


def test_an_isolated_bad_packet_is_skipped_counted_and_leaves_a_gap(mpeg_ps: Path, tmp_path: Path) -> None:
    data = bytearray(mpeg_ps.read_bytes())
    t, pos, size = min(_audio_packets(mpeg_ps), key=lambda p: abs(p[0] - 1.2))
    data[pos + 20 : pos + size - 20] = b"\xff" * (size - 40)  # one MP2 packet inside the window, destroyed
    bad = tmp_path / "bad.mpg"
    bad.write_bytes(bytes(data))
    clean, hit = decode(mpeg_ps, start_s=0.5), decode(bad, start_s=0.5)
    assert hit.decode_errors >= 1 and clean.decode_errors == 0
    assert np.array_equal(hit.frames, clean.frames)
    assert 0.02 < hit.padded_audio_s < 0.2  # the lost packet's samples are zeros, counted …
    late = slice(round((t + 0.3 - 0.5) * 16000), None)  # … and what follows stays at its time (no shift)
    assert np.abs(hit.waveform[late] - clean.waveform[late]).max() < 0.02


def test_a_window_that_cannot_be_filled_is_an_error(mpeg_ps: Path, tmp_path: Path) -> None:
    data = bytearray(mpeg_ps.read_bytes())
    for _, pos, size in _audio_packets(mpeg_ps):
        data[pos + 8 : pos + size - 8] = b"\xff" * (size - 16)  # every audio packet destroyed
    bad = tmp_path / "noaudio.mpg"
    bad.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="noaudio.mpg: .*(no decodable audio|corrupt)"):
        decode(bad, start_s=0.5)


# --- 6. broken files, wrong extensions, absent modalities ------------------------------------------------------------
def test_empty_and_text_files_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: empty file \(0 bytes\)"):
        decode(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 20)
    with pytest.raises(MediaError, match=r"notes\.mp4: not a media file"):
        decode(text)


def test_the_content_decides_the_format_not_the_extension(tmp_path: Path) -> None:
    mp4 = write(tmp_path / "real.mp4", "mp4", "libx264", "aac")
    misnamed = tmp_path / "misnamed.avi"
    misnamed.write_bytes(mp4.read_bytes())
    a, b = decode(mp4), decode(misnamed)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.waveform, b.waveform)


def test_absent_streams_are_flagged(tmp_path: Path) -> None:
    audio_only = write(tmp_path / "audio.mkv", "matroska", None, "flac")
    with pytest.raises(MediaError, match="audio.mkv: no video stream"):
        decode(audio_only)
    clip = decode(audio_only, allow_missing_video=True)
    assert not clip.video_present and clip.audio_present and not clip.frames.any()
    assert clip.frames.shape == (16, 32, 32, 3) and abs(rms(clip.waveform) / RMS - 1) < 0.01
    video_only = write(tmp_path / "video.mkv", "matroska", "mpeg4")
    with pytest.raises(MediaError, match="video.mkv: no audio stream"):
        decode(video_only)
    clip = decode(video_only, allow_missing_audio=True)
    assert clip.video_present and not clip.audio_present and not clip.has_audio and not clip.waveform.any()
    assert clip.padded_audio_s == 0.0  # an absent stream is absent, not padding
    with pytest.raises(MediaError, match="after the end of the file"):
        decode(audio_only, allow_missing_video=True, start_s=5.0)

