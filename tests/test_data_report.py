"""The data report on real files written with PyAV: each status rule, the counts, the CSV, MLflow logging, and that
probing reads container headers only (no frame is decoded)."""
from __future__ import annotations

import io
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from fusionbench.config import DataConfig
from fusionbench.data import report
from fusionbench.data.media import MediaError, decode_clip
from fusionbench.data.synthetic import write_mp4

FPS, SR = 8, 16000

# path, label, start_s, split → the report's status and reason for the generic clips.csv fixture (clip_seconds 2)
CLIPS_CSV = """path,label,start_s,split
ok.mp4,dog,,train
no_audio.mp4,dog,,train
audio_only.mp4,cat,,val
short.mp4,cat,,train
late.mp4,dog,1500,test
missing.mp4,cat,,test
corrupt.mp4,dog,,val
"""
CLIPS_EXPECTED = [
    ("ok.mp4", "train", "dog", "ok", ""),
    ("no_audio.mp4", "train", "dog", "audio_missing", "no audio stream"),
    ("audio_only.mp4", "val", "cat", "video_missing", "no video stream"),
    ("short.mp4", "train", "cat", "padded",
     "window 0.00–2.00 s runs 1.00 s past the end of the video and audio (1.00 s): padded"),
    ("late.mp4", "test", "dog", "skipped",
     "window 1500.00–1502.00 s starts after the end of the file (video ends at 2.00 s)"),
    ("missing.mp4", "test", "cat", "skipped", "file not found"),
    ("corrupt.mp4", "val", "dog", "skipped", "cannot open (Invalid data found when processing input)"),
]
CLIPS_SUMMARY = """data report: 7 clips: 1 ok, 3 skipped, 1 padded, 1 audio_missing, 1 video_missing

clips per split and status
split  ok  skipped  padded  audio_missing  video_missing  total
train   1        0       1              1              0      3
val     0        1       0              0              1      2
test    0        2       0              0              0      2
total   1        3       1              1              1      7

clips kept per class and split (every status but skipped)
class  train  val  test  total
cat        1    1     0      2
dog        2    0     0      2"""


def _frames(seconds: float) -> np.ndarray:
    n = round(seconds * FPS)
    return np.random.default_rng(n).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)  # (T, H, W, 3)


def _wave(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # (S,)


def write_video_only(path: Path, seconds: float) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i, rgb in enumerate(_frames(seconds)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_audio_only(path: Path, seconds: float, fmt: str = "mp4") -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("aac", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(_wave(seconds)[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SR, 0, Fraction(1, SR)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_media(root: Path) -> dict[str, Path]:
    """The fixture files: 2-s audio-visual, video-only, audio-only, a 1-s clip, random bytes named .mp4."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "ok": root / "ok.mp4", "late": root / "late.mp4", "short": root / "short.mp4",
        "no_audio": root / "no_audio.mp4", "audio_only": root / "audio_only.mp4", "corrupt": root / "corrupt.mp4",
    }
    write_mp4(files["ok"], _frames(2), _wave(2), FPS, SR)
    shutil.copyfile(files["ok"], files["late"])
    write_mp4(files["short"], _frames(1), _wave(1), FPS, SR)
    write_video_only(files["no_audio"], 2)
    write_audio_only(files["audio_only"], 2)
    files["corrupt"].write_bytes(np.random.default_rng(0).bytes(4096))
    return files


@pytest.fixture(scope="module")
def clips_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report_clips")
    write_media(root)
    (root / "clips.csv").write_text(CLIPS_CSV)
    return root


def clips_cfg(root: Path, **overrides):
    cfg = OmegaConf.structured(DataConfig)
    cfg.dataset, cfg.root = "clips", str(root)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def rows(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    return [tuple(r) for r in frame[list(report.COLUMNS)].itertuples(index=False)]


# ------------------------------------------------------------------------------------------- the status rules


def test_every_status_rule_on_real_files(clips_root: Path) -> None:
    frame, warnings = report.check_data(clips_cfg(clips_root), workers=1, progress=False)
    assert list(frame.columns) == list(report.COLUMNS)
    assert rows(frame) == CLIPS_EXPECTED
    assert warnings == []


def test_a_process_pool_gives_the_same_report(clips_root: Path) -> None:
    one, _ = report.check_data(clips_cfg(clips_root), workers=1, progress=False)
    two, _ = report.check_data(clips_cfg(clips_root), workers=2, progress=False)
    pd.testing.assert_frame_equal(one, two)


def test_each_file_is_probed_once_and_progress_counts_clips(clips_root: Path) -> None:
    """EPIC-style: many segments of one video open it once; the progress line still counts clips."""
    class Seen:
        done = 0

        def update(self, n: int) -> None:
            self.done += n

    seen = Seen()
    paths = [str(clips_root / "ok.mp4")] * 3 + [str(clips_root / "short.mp4")]
    probes = report.probe_files(paths, workers=2, progress=seen)
    assert sorted(probes) == sorted(set(paths)) and seen.done == 4


def test_the_window_is_the_one_the_datamodule_decodes(clips_root: Path, tmp_path: Path) -> None:
    """clip_seconds from start_s, or centred on start_s–end_s (never before 0), inside a 2-s file."""
    (tmp_path / "clips.csv").write_text("path,label,start_s,end_s,split\n"
                                        "ok.mp4,a,0,1,train\nok.mp4,a,1.0,,test\nok.mp4,a,1.0,1.5,val\n")
    cfg = clips_cfg(clips_root, manifest=str(tmp_path / "clips.csv"), clip_seconds=1.5)
    frame, _ = report.check_data(cfg, workers=1, progress=False)
    assert rows(frame) == [
        ("ok.mp4", "train", "a", "ok", ""),  # centred on 0–1 s: 0–1.5 s
        ("ok.mp4", "test", "a", "padded",
         "window 1.00–2.50 s runs 0.50 s past the end of the video and audio (2.00 s): padded"),
        ("ok.mp4", "val", "a", "ok", ""),  # centred on 1–1.5 s: 0.5–2 s (from start_s it would run past the end)
    ]


def test_clip_status_thresholds() -> None:
    both = report.Probe(video=(0.0, 2.0), audio=(0.0, 2.0))
    assert report.clip_status(both, 0.0, 2.0) == ("ok", "")
    assert report.clip_status(both, 0.0, 2.0 + report.PAD_TOLERANCE_S / 2) == ("ok", "")  # rounding is not padding
    assert report.clip_status(both, 0.5, 2.0)[0] == "padded"
    assert "0.50 s past" in report.clip_status(both, 0.5, 2.0)[1]
    assert report.clip_status(both, 2.0, 2.0)[0] == "skipped"  # starts exactly at the end: nothing to decode
    assert report.clip_status(both, 1.9, 2.0)[0] == "padded"
    short_audio = report.Probe(video=(0.0, 2.0), audio=(0.0, 1.25))
    assert report.clip_status(short_audio, 0.0, 2.0) == (
        "padded", "window 0.00–2.00 s runs 0.75 s past the end of the audio (1.25 s): padded")
    video_only = report.Probe(video=(0.0, 1.0))
    assert report.clip_status(video_only, 0.0, 2.0) == (
        "audio_missing", "no audio stream; window 0.00–2.00 s runs 1.00 s past the end of the video (1.00 s): padded")
    late_audio = report.Probe(video=(0.0, 2.0), audio=(0.5, 2.0))  # audio begins 0.5 s after the file's start
    assert report.clip_status(late_audio, 0.0, 2.0) == (
        "padded", "window 0.00–2.00 s runs 0.50 s before the start of the audio (0.50 s): padded")
    assert report.clip_status(report.Probe(error="file not found"), 0.0, 2.0) == ("skipped", "file not found")


# ------------------------------------------------------------------------------------------- probing reads headers


def test_probing_decodes_no_frame(clips_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every container the probe opens is watched: it never decodes (nor even demuxes) a packet of an mp4, and
    ``media.decode_clip`` is never called."""
    real_open = av.open
    calls: list[str] = []

    class Watched:
        def __init__(self, container):
            self._container = container

        def __getattr__(self, name):
            if name in ("decode", "demux", "seek"):
                calls.append(name)
            return getattr(self._container, name)

        def __enter__(self):
            self._container.__enter__()
            return self

        def __exit__(self, *exc):
            return self._container.__exit__(*exc)

    monkeypatch.setattr(av, "open", lambda *a, **k: Watched(real_open(*a, **k)))
    from fusionbench.data import media

    def no_decode(*args, **kwargs):
        raise AssertionError("decode_clip called while probing")

    monkeypatch.setattr(media, "decode_clip", no_decode)
    frame, _ = report.check_data(clips_cfg(clips_root), workers=1, progress=False)
    assert len(frame) == len(CLIPS_EXPECTED) and calls == []


def test_probing_never_reads_the_packets(clips_root: Path, tmp_path: Path) -> None:
    """A file whose header is intact but whose coded data is zeros cannot be decoded, yet probes as ok: the probe's
    answer comes from the header alone."""
    data = bytearray((clips_root / "ok.mp4").read_bytes())
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)  # the coded frames and audio, zeroed
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(bytes(data))
    with pytest.raises(MediaError):
        decode_clip(zeroed, num_frames=16, size=32, sample_rate=SR, clip_seconds=2.0)
    assert report.clip_status(report.probe_file(zeroed), 0.0, 2.0) == ("ok", "")


def test_probing_reads_less_than_one_video_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding any frame needs a whole keyframe packet; the probe reads fewer bytes of the file than the smallest
    one holds (FFmpeg's default stream analysis alone would read and decode the first: this is what HEADER_ONLY
    saves)."""
    rng = np.random.default_rng(1)
    path = tmp_path / "noise.mp4"
    write_mp4(path, rng.integers(0, 255, (4, 480, 640, 3), dtype=np.uint8), _wave(0.5), FPS, SR)  # noise: big frames
    with av.open(str(path)) as container:
        keyframes = [p.size for p in container.demux(video=0) if p.is_keyframe and p.size]
    read = {"bytes": 0}

    class Counting(io.RawIOBase):
        def __init__(self, name: str) -> None:
            self.file = open(name, "rb")

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            data = self.file.read(len(buffer))
            buffer[: len(data)] = data
            read["bytes"] += len(data)
            return len(data)

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.file.seek(offset, whence)

        def tell(self) -> int:
            return self.file.tell()

        def close(self) -> None:
            self.file.close()
            super().close()

    real_open = av.open
    monkeypatch.setattr(av, "open", lambda name, *a, **k: real_open(Counting(name), *a, **k))
    probe = report.probe_file(path)
    assert probe.video == pytest.approx((0.0, 0.5)) and probe.audio == pytest.approx((0.0, 0.5))
    assert 0 < read["bytes"] < min(keyframes), (read["bytes"], keyframes)


def test_an_mpeg_ps_file_is_demuxed_for_its_real_span(tmp_path: Path) -> None:
    """MPEG-PS headers only estimate durations (from the bit rate: 1.125 s for this 2-s file): its packets are read."""
    path = tmp_path / "v.mpg"
    with av.open(str(path), "w", format="mpeg") as container:
        stream = container.add_stream("mpeg2video", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i, rgb in enumerate(_frames(2)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        header = container.streams.video[0].duration * container.streams.video[0].time_base
    assert abs(header - 2.0) > 0.5  # the header's estimate is wrong
    assert report.probe_file(path).video == pytest.approx((0.0, 2.0))  # from its first timestamp (0.625 s here)


def test_a_truncated_mp4_is_padded_where_its_data_ends(tmp_path: Path) -> None:
    """A partial download whose index is at the front (faststart) opens with the full duration in its header; the
    probe sees that the index lists more sample bytes than the file holds, demuxes it, and agrees with decoding."""
    full = tmp_path / "full.mp4"
    rng = np.random.default_rng(2)
    with av.open(str(full), "w", format="mp4", options={"movflags": "faststart"}) as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("aac", rate=SR, layout="mono")
        for i in range(16):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = av.AudioFrame.from_ndarray(_wave(2)[None], format="flt", layout="mono")
        samples.sample_rate, samples.pts = SR, 0
        container.mux(audio.encode(samples))
        container.mux(audio.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with av.open(str(cut)) as container:
        assert container.duration == 2 * av.time_base  # the header still says 2 s
    assert report.clip_status(report.probe_file(full), 0.0, 2.0) == ("ok", "")
    status, reason = report.clip_status(report.probe_file(cut), 0.0, 2.0)
    decoded = decode_clip(cut, num_frames=16, size=32, sample_rate=SR, clip_seconds=2.0)
    assert status == report.decoded_status(decoded)[0] == "padded", (reason, decoded)
    assert "past the end of the video" in reason and decoded.padded_frames > 0


def test_a_stream_without_header_duration_takes_the_container_s(tmp_path: Path) -> None:
    """Matroska streams carry no duration (PyAV reports None): the container's is used."""
    path = write_audio_only(tmp_path / "a.mkv", 1.5, fmt="matroska")
    with av.open(str(path)) as container:
        assert container.streams.audio[0].duration is None
    probe = report.probe_file(path)
    assert probe.video is None and probe.audio == pytest.approx((0.0, 1.5), abs=0.1)


@pytest.mark.parametrize("name, start_s, status", [
    ("ok.mp4", 0.0, "ok"), ("short.mp4", 0.0, "padded"), ("no_audio.mp4", 0.0, "audio_missing"),
    ("audio_only.mp4", 0.0, "video_missing"), ("late.mp4", 1500.0, "skipped"), ("corrupt.mp4", 0.0, "skipped"),
    ("missing.mp4", 0.0, "skipped"), ("ok.mp4", 0.5, "padded"),
])
def test_probing_and_decoding_agree(clips_root: Path, name: str, start_s: float, status: str) -> None:
    """The status a probe predicts is the one decoding the window finds (a training run's report: decoded_status)."""
    path = clips_root / name
    try:
        decoded = decode_clip(path, num_frames=16, size=32, sample_rate=SR, clip_seconds=2.0, start_s=start_s,
                              allow_missing_audio=True, allow_missing_video=True)
    except MediaError as exc:
        decoded = exc
    probed = report.clip_status(report.probe_file(path), start_s, 2.0)
    assert probed[0] == report.decoded_status(decoded)[0] == status, (probed, report.decoded_status(decoded))


def test_a_training_run_s_report_from_decoding_matches_the_check(clips_root: Path) -> None:
    """What a run that decodes builds (clip_line + decoded_status per clip, left_out_lines): the same paths, splits,
    labels and statuses as ``data check``."""
    from fusionbench.data.datasets import records_for
    from fusionbench.data.windows import clip_window_start

    cfg = clips_cfg(clips_root)
    records = records_for(cfg)
    lines = []
    for clip in records.clips:
        try:
            result = decode_clip(clip.path, num_frames=16, size=32, sample_rate=SR, clip_seconds=2.0,
                                 start_s=clip_window_start(clip, 2.0, 16), allow_missing_audio=True, allow_missing_video=True)
        except MediaError as exc:
            result = exc
        lines.append(report.clip_line(clip, records.class_names, *report.decoded_status(result), root=clips_root))
    decoded = report.report_frame(lines + report.left_out_lines(records, clips_root))
    checked, _ = report.check_data(cfg, workers=1, progress=False)
    columns = ["path", "split", "label", "status"]
    pd.testing.assert_frame_equal(decoded[columns], checked[columns])


def test_decoded_status_reasons(clips_root: Path) -> None:
    kwargs = dict(num_frames=16, size=32, sample_rate=SR, clip_seconds=2.0, allow_missing_audio=True)
    assert report.decoded_status(decode_clip(clips_root / "ok.mp4", **kwargs)) == ("ok", "")
    assert report.decoded_status(decode_clip(clips_root / "short.mp4", **kwargs)) == (
        "padded", "padded: 8 of 16 frames and 0.98 s of audio")  # AAC decodes whole 1024-sample frames: 1.024 s
    assert report.decoded_status(decode_clip(clips_root / "no_audio.mp4", **kwargs)) == (
        "audio_missing", "no audio stream")
    with pytest.raises(MediaError) as exc:
        decode_clip(clips_root / "late.mp4", start_s=1500.0, **kwargs)
    assert report.decoded_status(exc.value) == ("skipped", exc.value.reason)


# ------------------------------------------------------------------------------------------- the frame and counts


def test_summary_counts_per_split_status_and_class(clips_root: Path) -> None:
    frame, _ = report.check_data(clips_cfg(clips_root), workers=1, progress=False)
    assert report.summarise(frame) == CLIPS_SUMMARY
    assert report.counts(frame) == {"ok": 1, "skipped": 3, "padded": 1, "audio_missing": 1, "video_missing": 1}


def test_multilabel_clips_count_once_per_class() -> None:
    frame = report.report_frame([("a.mp4", "train", "x|y", "ok", ""), ("b.mp4", "", "y", "padded", "p"),
                                 ("c.mp4", "test", "z", "skipped", "file not found")])
    text = report.summarise(frame)
    table = text.split("clips kept per class and split (every status but skipped)\n")[1].splitlines()
    assert table[0].split() == ["class", "train", "test", "(none)", "total"]
    assert [line.split() for line in table[1:]] == [["x", "1", "0", "0", "1"], ["y", "1", "0", "1", "2"],
                                                    ["z", "0", "0", "0", "0"]]


def test_report_frame_columns_and_unknown_status() -> None:
    frame = report.report_frame([report.ReportLine("a.mp4", "train", "x", "ok", ""),
                                 {"path": "b.mp4", "split": "", "label": "y", "status": "padded", "reason": "r"}])
    assert list(frame.columns) == list(report.COLUMNS) and len(frame) == 2
    with pytest.raises(ValueError, match="unknown data report status"):
        report.report_frame([("a.mp4", "train", "x", "missing", "")])


def test_written_csv_round_trips(clips_root: Path, tmp_path: Path) -> None:
    frame, _ = report.check_data(clips_cfg(clips_root), workers=1, progress=False)
    path = report.write_report(frame, tmp_path / "out")
    assert path == tmp_path / "out" / "data_report.csv"
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(back.columns) == list(report.COLUMNS)
    assert rows(back) == CLIPS_EXPECTED
    assert sorted(p.name for p in path.parent.iterdir()) == ["data_report.csv"]  # no temporary file left


# ------------------------------------------------------------------------------------------- VGGSound as published

VGGSOUND_CSV = """aaaaaaaaaaa,0,dog,train
bbbbbbbbbbb,30,dog,train
ccccccccccc,0,"cat, domestic",test
ddddddddddd,10,"cat, domestic",train
eeeeeeeeeee,0,dog,test
fffffffffff,0,dog,test
"""
VGGSOUND_EXPECTED = [
    ("aaaaaaaaaaa_000000.mp4", "train", "dog", "ok", ""),
    ("bbbbbbbbbbb_000030.mp4", "train", "dog", "audio_missing", "no audio stream"),
    ("ccccccccccc_000000.mp4", "test", "cat, domestic", "video_missing", "no video stream"),
    ("ddddddddddd_000010.mp4", "train", "cat, domestic", "padded",
     "window 0.00–2.00 s runs 1.00 s past the end of the video and audio (1.00 s): padded"),
    ("fffffffffff_000000.mp4", "test", "dog", "skipped", "cannot open (Invalid data found when processing input)"),
    ("eeeeeeeeeee_000000.mp4", "test", "dog", "skipped", "file not found"),  # left out by the reader: after the clips
]


@pytest.fixture(scope="module")
def vggsound_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report_vggsound")
    files = write_media(root / "made")
    for name, key in [("aaaaaaaaaaa_000000", "ok"), ("bbbbbbbbbbb_000030", "no_audio"),
                      ("ccccccccccc_000000", "audio_only"), ("ddddddddddd_000010", "short"),
                      ("fffffffffff_000000", "corrupt")]:
        files[key].rename(root / f"{name}.mp4")
    shutil.rmtree(root / "made")
    (root / "vggsound.csv").write_text(VGGSOUND_CSV)
    return root


def test_vggsound_four_column_csv(vggsound_root: Path) -> None:
    cfg = clips_cfg(vggsound_root, dataset="vggsound", val_frac=0.0)  # no val carved from train: splits as given
    frame, _ = report.check_data(cfg, workers=2, progress=False)
    assert rows(frame) == VGGSOUND_EXPECTED


# ------------------------------------------------------------------------------------------- with a training run


def test_log_data_report_to_a_real_sqlite_store(clips_root: Path, tmp_path: Path) -> None:
    from fusionbench import tracking
    from fusionbench.config import load_config

    frame, _ = report.check_data(clips_cfg(clips_root), workers=1, progress=False)
    from sweep_runners import fresh_store  # a migrated store, copied (a new one migrates for seconds)

    cfg = load_config([f"tracking.store={fresh_store(tmp_path / 'results')}", "tracking.experiment=report"])
    with tracking.tracked_run(cfg) as tr:
        report.log_data_report(tr, frame)
    run = tracking.client(cfg.tracking.store).get_run(tr.run_id)
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("data/report/")} == {
        "data/report/ok": 1.0, "data/report/skipped": 3.0, "data/report/padded": 1.0,
        "data/report/audio_missing": 1.0, "data/report/video_missing": 1.0,
    }
    logged = pd.read_csv(tr.artifact_dir / "data_report.csv", dtype=str, keep_default_na=False)
    assert rows(logged) == CLIPS_EXPECTED


def test_a_run_s_report_names_padding_and_missing_modalities_from_the_store(tmp_path: Path) -> None:
    """``run_report`` of a datamodule set up from the store: the statuses ``data check`` gives, with the padding
    decoding counted (frames and seconds of audio) and audio / video marked missing (data.missing_modality=absent)."""
    from fusionbench.data.datamodule import AVDataModule

    root = tmp_path / "clips"
    files = write_media(root)
    for split in ("val", "test"):  # every split needs a clip that decodes
        shutil.copyfile(files["ok"], root / f"ok_{split}.mp4")
    (root / "clips.csv").write_text(CLIPS_CSV + "ok_val.mp4,dog,,val\nok_test.mp4,cat,,test\n")
    cfg = clips_cfg(root, cache_dir=str(tmp_path / "cache"), on_error="skip")
    AVDataModule(cfg, decode_workers=1).setup()  # fills the store
    module = AVDataModule(cfg, decode_workers=1)
    module.setup()
    assert module.decode_count == 0  # the report comes from what the store keeps per clip
    got = {r[0]: r[3:] for r in rows(report.run_report(module))}
    assert got["short.mp4"] == ("padded", "padded: 8 of 16 frames and 0.98 s of audio")
    assert got["no_audio.mp4"] == ("audio_missing", "no audio stream")
    assert got["audio_only.mp4"] == ("video_missing", "no video stream")
    assert got["ok.mp4"] == ("ok", "") and got["missing.mp4"] == ("skipped", "file not found")
    assert got["late.mp4"][0] == got["corrupt.mp4"][0] == "skipped"
    checked, _ = report.check_data(cfg, workers=1, progress=False)
    assert {r[0]: r[3] for r in rows(checked)} == {path: status for path, (status, _) in got.items()}
