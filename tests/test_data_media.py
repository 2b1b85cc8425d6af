"""PyAV decoding: shapes, the AAC trim, where tones / bursts / frames land, resizing, and clear errors."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from fusionbench.data import synthetic as S
from fusionbench.data.media import MediaError, decode_clip, sample_times

DECODE = dict(num_frames=16, size=32, sample_rate=16000, clip_seconds=2.0)


def _numbered_frames(n: int = 16, size: int = 32) -> np.ndarray:
    """Frame i is a flat grey of level 8 + 15·i: the frame index reads back as brightness."""
    return np.broadcast_to((8 + 15 * np.arange(n, dtype=np.uint8))[:, None, None, None], (n, size, size, 3)).copy()


def _frame_index(frames: np.ndarray) -> list[int]:
    return [int(round((f.mean() - 8) / 15)) for f in frames]


def _tone(seconds: float = 2.0, hz: float = 523.0, bursts: tuple[float, ...] = ()) -> np.ndarray:
    t = np.arange(round(16000 * seconds)) / 16000
    env = np.full(t.shape, 0.05)
    for b in bursts:
        env[(t >= b) & (t < b + 0.08)] = 0.5
    return (env * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_decoded_shapes_and_aac_trim(write_mp4, tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "a.mp4", _numbered_frames(), _tone())
    with av.open(str(path)) as c:  # the raw AAC decode is longer than the nominal 2 s …
        raw = sum(f.samples for f in c.decode(audio=0))
    assert raw == 32768
    clip = decode_clip(path, **DECODE)  # … and decode_clip trims it to exactly 2 s
    assert clip.frames.shape == (16, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.waveform.shape == (32000,) and clip.waveform.dtype == np.float32 and clip.has_audio
    again = decode_clip(path, **DECODE)
    assert np.array_equal(clip.frames, again.frames) and np.array_equal(clip.waveform, again.waveform)


def test_tone_frequency_and_bursts_land_where_written(write_mp4, tmp_path: Path) -> None:
    bursts = (0.25, 1.0, 1.625)  # starts of video frames 2, 8, 13
    path = write_mp4(tmp_path / "b.mp4", _numbered_frames(), _tone(hz=784.0, bursts=bursts))
    wave = decode_clip(path, **DECODE).waveform
    peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / wave.size
    assert abs(peak_hz - 784.0) < 1.0
    energy = (wave.reshape(16, -1) ** 2).mean(1)  # per 125 ms video frame
    assert set(np.argsort(energy)[-3:]) == {2, 8, 13}
    onset = np.flatnonzero(np.convolve(wave**2, np.ones(80) / 80, "same") > 0.05)[0]  # first burst, in samples
    assert abs(onset - 0.25 * 16000) < 80  # within 5 ms: no AAC priming delay left


def test_synthetic_clip_decodes_to_its_factors(tmp_path: Path) -> None:
    spec = S.TASKS["sync"]
    S.generate("sync", 3, seed=1, out=tmp_path, video_noise=0.0, audio_snr_db=60.0)
    factors = S.make_factors(spec, 3, 1, S.render_params(spec, video_noise=0.0, audio_snr_db=60.0))
    for f in factors:
        clip = decode_clip(tmp_path / S.clip_path(f.index), **DECODE)
        frames, wave = S.render_clip(f)
        assert np.abs(clip.frames.astype(int) - frames).mean() < 4  # H.264 at crf 18
        energy = (clip.waveform.reshape(16, -1) ** 2).mean(1)
        assert set(np.argsort(energy)[-len(f.audio_events):]) == set(f.audio_events)
        level = clip.frames.reshape(16, -1).mean(1)
        assert set(np.argsort(level)[-len(f.events):]) == set(f.events)


@pytest.mark.parametrize(
    "num_frames, start_s, clip_seconds, expected, padded",
    [
        (16, 0.0, 2.0, list(range(16)), 0),
        (8, 0.0, 2.0, [1, 3, 5, 7, 9, 11, 13, 15], 0),  # segment centres fall on odd frames
        (4, 0.0, 2.0, [2, 6, 10, 14], 0),
        (4, 1.0, 1.0, [9, 11, 13, 15], 0),  # a window inside the clip
        (4, 1.5, 1.0, [13, 15, 15, 15], 2),  # a window past the end holds the last frame, and counts it
    ],
)
def test_uniform_frame_sampling(write_mp4, tmp_path: Path, num_frames, start_s, clip_seconds, expected,
                                padded) -> None:
    path = write_mp4(tmp_path / "n.mp4", _numbered_frames(), _tone())
    clip = decode_clip(path, num_frames=num_frames, size=32, sample_rate=16000, clip_seconds=clip_seconds,
                       start_s=start_s)
    assert _frame_index(clip.frames) == expected
    assert clip.waveform.shape == (round(16000 * clip_seconds),)
    assert clip.padded_frames == padded
    assert (clip.padded_audio_s > 0.4) == (padded > 0)  # 0.5 s of the last window's audio is past the end


def test_sample_times_are_segment_centres() -> None:
    assert np.allclose(sample_times(4, 2.0), [0.25, 0.75, 1.25, 1.75])
    assert np.allclose(sample_times(2, 1.0, start_s=3.0), [3.25, 3.75])


def test_audio_window_starts_at_start_s(write_mp4, tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "w.mp4", _numbered_frames(), _tone(bursts=(1.25,)))
    wave = decode_clip(path, num_frames=4, size=32, sample_rate=16000, clip_seconds=0.5, start_s=1.0).waveform
    assert wave.shape == (8000,)
    onset = np.flatnonzero(np.convolve(wave**2, np.ones(80) / 80, "same") > 0.05)[0]
    assert abs(onset - 0.25 * 16000) < 80


def test_resampled_to_the_requested_rate(write_mp4, tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "r.mp4", _numbered_frames(), _tone(hz=523.0))
    wave = decode_clip(path, num_frames=4, size=32, sample_rate=8000, clip_seconds=2.0).waveform
    assert wave.shape == (16000,)
    assert abs(np.argmax(np.abs(np.fft.rfft(wave))) * 8000 / wave.size - 523.0) < 1.0


def test_resize_short_side_and_centre_crop(write_mp4, tmp_path: Path) -> None:
    frames = np.zeros((8, 32, 64, 3), np.uint8)
    frames[:, :, 16:48] = 200  # a bright centre band half the width: the centre crop keeps only it
    path = write_mp4(tmp_path / "wide.mp4", frames, _tone(1.0))
    clip = decode_clip(path, num_frames=4, size=16, sample_rate=16000, clip_seconds=1.0)
    assert clip.frames.shape == (4, 16, 16, 3)
    assert clip.frames[:, :, 2:-2].min() > 150


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"nothere\.mp4: file not found") as info:
        decode_clip(tmp_path / "nothere.mp4", **DECODE)
    assert info.value.path == tmp_path / "nothere.mp4" and info.value.reason == "file not found"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed_middle"])
def test_corrupt_file_is_a_clear_error(write_mp4, tmp_path: Path, damage: str) -> None:
    good = write_mp4(tmp_path / "good.mp4", _numbered_frames(), _tone()).read_bytes()
    bad = tmp_path / f"{damage}.mp4"
    bad.write_bytes({
        "garbage": b"not an mp4 at all" * 64,
        "truncated": good[: len(good) // 2],
        "zeroed_middle": good[:1500] + bytes(len(good) - 3000) + good[-1500:],
    }[damage])
    with pytest.raises(MediaError) as info:
        decode_clip(bad, **DECODE)
    assert str(bad) in str(info.value) and info.value.reason


def test_clip_without_audio_is_an_error_unless_allowed(write_mp4, tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "silent.mp4", _numbered_frames())
    with pytest.raises(MediaError, match="silent.mp4: no audio stream"):
        decode_clip(path, **DECODE)
    clip = decode_clip(path, **DECODE, allow_missing_audio=True)
    assert not clip.has_audio and clip.waveform.shape == (32000,) and not clip.waveform.any()
    assert _frame_index(clip.frames) == list(range(16))


def test_file_without_video_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "audio_only.m4a"
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(_tone()[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    with pytest.raises(MediaError, match="audio_only.m4a: no video stream"):
        decode_clip(path, **DECODE)
