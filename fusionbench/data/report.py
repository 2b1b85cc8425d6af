"""The data report: one row per clip, ``path, split, label, status, reason``, from probing each file (no decoding).

``check_data(data_cfg)`` reads the dataset through ``datasets.records_for`` (its reader and the integrity rules),
probes every media file once in a process pool (``probe_file``: PyAV opens the container and lists its streams and
their time spans; no frame is decoded) and gives each clip a status. ``fusionbench data check`` writes the frame as
``data_report.csv`` and prints ``summarise``; a training run logs the same frame with ``log_data_report``.

Statuses, in the order a clip is tested against them (the first that holds; fusionbench's own rules):

- ``skipped``: the reader left the row out (a missing file: reason "file not found"; a duplicate; ...), the file
  cannot be opened or holds neither audio nor video, or the clip's window starts at or after the end of the file
  (e.g. a ``start_s`` given in milliseconds): nothing of the clip could be decoded.
- ``video_missing`` / ``audio_missing``: the file has no video / audio stream (the modality is absent for the
  model, never zeros passed off as data); padding, if any, is named in the reason.
- ``padded``: part of the window, more than ``PAD_TOLERANCE_S``, lies outside a stream's span (past its end, or
  before a late start); the reason gives the padding in seconds per stream.
- ``ok``: everything else.

The window is the centred one the datamodule decodes (``windows.clip_window_start``; a trimmed clip's end from the
probe), ``clip_seconds`` long, in seconds
from the file's first timestamp (as ``media.decode_clip`` counts them). A stream's span is its start + duration from
the header for containers with an index (``INDEXED_FORMATS``: mp4/mov, mkv/webm, avi, wav, flac, ogg), opened with
``HEADER_ONLY`` probing so that FFmpeg decodes no frame either; any other (MPEG-PS/TS, mp3, raw streams), whose
headers only estimate durations, a header without one, or a truncated mp4 is demuxed (its packets read, never
decoded) for the first and last timestamps. ``decoded_status`` gives the same statuses from a decoded window (a
training run's report).
"""
from __future__ import annotations

import multiprocessing
import os
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import av
import pandas as pd
from omegaconf import DictConfig

from fusionbench.data.datasets.base import DatasetRecords
from fusionbench.data.manifest import Clip
from fusionbench.data.media import DecodedClip, MediaError
from fusionbench.data.synthetic import GenerationProgress
from fusionbench.data.windows import clip_window_start

COLUMNS = ("path", "split", "label", "status", "reason")
STATUSES = ("ok", "skipped", "padded", "audio_missing", "video_missing")
SPLIT_ORDER = ("train", "val", "test")
PAD_TOLERANCE_S = 0.01  # a window this close to a stream's end is not padding (container rounding, AAC frames)
NONE = "(none)"  # a clip without a split (or label) in the printed tables


class ReportLine(NamedTuple):
    """One row of the data report."""

    path: str
    split: str
    label: str
    status: str  # one of STATUSES
    reason: str


@dataclass(frozen=True)
class Probe:
    """What one file holds: each stream's time span ``(start, end)`` in seconds (None: no such stream), or why
    the file cannot be used (``error``)."""

    video: tuple[float, float] | None = None
    audio: tuple[float, float] | None = None
    error: str | None = None


# --------------------------------------------------------------------------------------------------- probing

# Containers whose header durations come from an index (exact); any other (MPEG-PS / TS, mp3, raw streams) only
# estimates them (an MPEG-PS file of 2 s said 0.125 s): its packets are demuxed (not decoded) for the real span.
INDEXED_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "wav", "flac", "ogg"})
HEADER_ONLY = {"probesize": "32", "analyzeduration": "0"}  # FFmpeg's least stream analysis: no frame decoded


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _origin(container: Any) -> float:
    """The file's first timestamp in seconds: times are counted from it (as ``media.decode_clip`` and ffmpeg's -ss)."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _header_span(stream: Any, container: Any) -> tuple[float, float] | None:
    """A stream's span from the header: its start + duration (the container's duration when it has none)."""
    start = float((stream.start_time or 0) * stream.time_base) - _origin(container) if stream.time_base else 0.0
    if stream.duration is not None and stream.time_base is not None:
        return start, start + float(stream.duration * stream.time_base)
    if container.duration is not None:
        return start, start + container.duration / av.time_base
    return None


def _demuxed_spans(container: Any, streams: list[Any]) -> dict[int, tuple[float, float]]:
    """Stream index → (first pts, last pts + duration) over its packets, read without decoding them; a read error
    (a truncated file) ends the file there."""
    origin = _origin(container)
    spans: dict[int, tuple[float, float]] = {}
    try:
        for packet in container.demux(*streams):
            if packet.pts is None or packet.time_base is None:
                continue  # the flush packet at the end, or an untimed raw stream
            t0 = float(packet.pts * packet.time_base) - origin
            t1 = float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin
            lo, hi = spans.get(packet.stream.index, (t0, t1))
            spans[packet.stream.index] = (min(lo, t0), max(hi, t1))
    except (av.FFmpegError, EOFError):
        pass
    return spans


def _truncated(container: Any, size: int) -> bool:
    """An mp4 / mov whose index lists more sample bytes than the file holds (a partial download with the index at the
    front): FFmpeg's mov demuxer derives each stream's bit rate from the sizes of its indexed samples."""
    if container.format.name != "mov,mp4,m4a,3gp,3g2,mj2":
        return False
    listed = sum(s.bit_rate * float(s.duration * s.time_base) / 8 for s in container.streams
                 if s.bit_rate and s.duration is not None and s.time_base is not None)
    return size < listed


def probe_file(path: str | Path) -> Probe:
    """Open ``path`` with PyAV and read its streams' spans (from the header, or by demuxing); never decodes.

    The container is opened with ``HEADER_ONLY`` probing: FFmpeg's default stream analysis decodes the first frames
    (24 ms of a 25-ms open of a 720p mp4); mp4 / mkv / avi declare their streams in the header. A container without
    an index is reopened with the default analysis (its streams are found in the packets) and demuxed, and so is a
    truncated mp4 (its data ends before its index says: the span is where the packets end)."""
    path = Path(path)
    if not path.is_file():
        return Probe(error="file not found" if not path.exists() else "not a regular file")
    try:
        with av.open(str(path), container_options=HEADER_ONLY) as container:
            if container.format.name in INDEXED_FORMATS:
                return _probe(container, demux=_truncated(container, path.stat().st_size))
        with av.open(str(path)) as container:
            return _probe(container, demux=True)
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        return Probe(error=f"cannot open ({_reason(exc)})")


def _probe(container: Any, demux: bool) -> Probe:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        return Probe(error="no audio or video stream")
    present = [s for s in (video, audio) if s is not None]
    spans = {s.index: _header_span(s, container) for s in present}
    if demux or None in spans.values():
        demuxed = _demuxed_spans(container, present)
        spans = demuxed if demux else {**spans, **demuxed}  # demux: the packets are the truth, not the header
    if any(spans.get(s.index) is None for s in present):
        return Probe(error="no timestamped packet (or no duration in the header)")
    return Probe(video=spans[video.index] if video is not None else None,
                 audio=spans[audio.index] if audio is not None else None)


def _probe_job(path: str) -> tuple[str, Probe]:
    return path, probe_file(path)


def probe_files(paths: Sequence[str], workers: int = 2, progress: Any = None) -> dict[str, Probe]:
    """``probe_file`` for each distinct path, over a process pool of ``workers`` (in this process when 1).

    ``progress`` (optional) gets ``update(n)`` after each file with the number of clips that use it."""
    uses = Counter(paths)
    unique = list(uses)
    out: dict[str, Probe] = {}

    def consume(results: Iterable[tuple[str, Probe]]) -> None:
        for path, probe in results:
            out[path] = probe
            if progress is not None:
                progress.update(uses[path])

    if workers <= 1 or len(unique) <= 1:
        consume(map(_probe_job, unique))
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        chunk = max(1, min(64, len(unique) // (8 * workers)))
        with multiprocessing.get_context(method).Pool(min(workers, len(unique))) as pool:
            consume(pool.imap_unordered(_probe_job, unique, chunksize=chunk))
    return out


# --------------------------------------------------------------------------------------------------- statuses


def clip_status(probe: Probe, start_s: float, clip_seconds: float) -> tuple[str, str]:
    """(status, reason) of the window ``[start_s, start_s + clip_seconds)`` in a probed file (the module's rules).

    Times count from the file's first timestamp, as ``media.decode_clip`` counts them; a stream's padding is the part
    of the window outside its span (after its end, or before a stream that starts late)."""
    if probe.error is not None:
        return "skipped", probe.error
    stop_s = start_s + clip_seconds
    window = f"window {start_s:.2f}–{stop_s:.2f} s"
    spans = {kind: span for kind, span in (("video", probe.video), ("audio", probe.audio)) if span is not None}
    last_kind, (_, last_end) = max(spans.items(), key=lambda kv: kv[1][1])
    if start_s >= last_end - PAD_TOLERANCE_S:
        return "skipped", f"{window} starts after the end of the file ({last_kind} ends at {last_end:.2f} s)"
    notes: dict[tuple[str, str], list[str]] = {}  # (padding, where) → the streams it applies to
    for kind, (t0, t1) in spans.items():
        before, after = max(0.0, t0 - start_s), max(0.0, stop_s - t1)
        if before > PAD_TOLERANCE_S:
            notes.setdefault((f"{min(before, clip_seconds):.2f} s before the start", f"{t0:.2f} s"), []).append(kind)
        if after > PAD_TOLERANCE_S:
            notes.setdefault((f"{min(after, clip_seconds):.2f} s past the end", f"{t1:.2f} s"), []).append(kind)
    padding = (f"{window} runs " + " and ".join(f"{pad} of the {' and '.join(kinds)} ({at})"
                                                for (pad, at), kinds in notes.items()) + ": padded") if notes else ""
    for kind, status in (("video", "video_missing"), ("audio", "audio_missing")):
        if kind not in spans:
            return status, f"no {kind} stream" + (f"; {padding}" if padding else "")
    if padding:
        return "padded", padding
    return "ok", ""


def decoded_status(result: DecodedClip | MediaError) -> tuple[str, str]:
    """(status, reason) of a window a training run decoded (``media.decode_clip``'s result, or its ``MediaError``),
    with the statuses probing gives: a run that decodes anyway reports what decoding found, in the same report."""
    if isinstance(result, MediaError):
        return "skipped", result.reason
    return presence_status(result.audio_present, result.video_present, result.padded_frames, len(result.frames),
                           result.padded_audio_s, result.decode_errors)


def presence_status(has_audio: bool, has_video: bool, padded_frames: int, num_frames: int, padded_audio_s: float,
                    decode_errors: int = 0) -> tuple[str, str]:
    """(status, reason) of a decoded clip from what the store keeps per clip (``decoded_status``'s rules): a missing
    stream first (padding named in the reason), then ``padded`` (frames repeated, or audio padding of at least
    ``PAD_TOLERANCE_S``), else ``ok``."""
    pads = []
    if padded_frames:
        pads.append(f"{padded_frames} of {num_frames} frames")
    if padded_audio_s >= PAD_TOLERANCE_S:
        pads.append(f"{padded_audio_s:.2f} s of audio")
    notes = [f"padded: {' and '.join(pads)}"] if pads else []
    if decode_errors:
        notes.append(f"{decode_errors} packet(s) failed to decode and were skipped")
    for present, kind, status in ((has_video, "video", "video_missing"), (has_audio, "audio", "audio_missing")):
        if not present:
            return status, "; ".join([f"no {kind} stream", *notes])
    return ("padded" if pads else "ok"), "; ".join(notes)


# --------------------------------------------------------------------------------------------------- the report


def _shown_path(path: str | Path, root: Path | None) -> str:
    """The path relative to the data root when it lies inside it (as the manifest names it), else as given."""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def _label_text(clip: Clip, class_names: Sequence[str]) -> str:
    return "|".join(class_names[i] if i < len(class_names) else str(i) for i in clip.labels)


def clip_line(clip: Clip, class_names: Sequence[str], status: str, reason: str, root: Path | None = None) -> ReportLine:
    """The report line of one clip: its path (relative to ``root`` when inside it), split, label text (``a|b`` for
    a multi-label clip) and the (status, reason) that ``clip_status`` or ``decoded_status`` gave it."""
    return ReportLine(_shown_path(clip.path, root), clip.split or "", _label_text(clip, class_names), status, reason)


def left_out_lines(records: DatasetRecords, root: Path | None = None) -> list[ReportLine]:
    """One ``skipped`` line per row the reader or the integrity rules left out (a missing file: "file not found", a
    duplicate, ...); ``warning`` rows are about the dataset, not a clip, and are not lines."""
    return [ReportLine(_shown_path(row.path, root), row.split or "", row.label, "skipped",
                       "file not found" if row.status == "missing" else row.reason)
            for row in records.report if row.status != "warning"]


def _centred(clip: Clip, probe: Probe, clip_seconds: float, num_frames: int) -> float:
    """The start of the centred window the datamodule decodes (``windows.clip_window_start``), the file's end taken
    from the probe (no second open)."""
    spans = [span for span in (probe.video, probe.audio) if span is not None]
    end = max(e for _, e in spans) if probe.error is None and spans else None
    return clip_window_start(clip, clip_seconds, num_frames, duration=end)


def report_lines(
    records: DatasetRecords, probes: Mapping[str, Probe], clip_seconds: float, root: Path | None = None,
    num_frames: int = 16,
) -> list[ReportLine]:
    """One line per clip, in the reader's order, then one per row left out (``left_out_lines``)."""
    lines = [clip_line(clip, records.class_names,
                       *clip_status(probes[str(clip.path)], _centred(clip, probes[str(clip.path)], clip_seconds,
                                                                     num_frames), clip_seconds), root)
             for clip in records.clips]
    return lines + left_out_lines(records, root)


def report_frame(rows: Iterable[ReportLine | Mapping[str, Any] | Sequence[Any]]) -> pd.DataFrame:
    """The report as a DataFrame with exactly ``COLUMNS`` (strings); an unknown status is a ``ValueError``."""
    records = [dict(r) if isinstance(r, Mapping) else dict(zip(COLUMNS, r)) for r in rows]
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS)).fillna("").astype(str)
    unknown = sorted(set(frame["status"]) - set(STATUSES))
    if unknown:
        raise ValueError(f"unknown data report status(es) {', '.join(unknown)}; valid: {', '.join(STATUSES)}")
    return frame


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """Clips per status, every status present (0 when none)."""
    got = frame["status"].value_counts()
    return {status: int(got.get(status, 0)) for status in STATUSES}


def _splits(frame: pd.DataFrame) -> list[str]:
    given = [s if s else NONE for s in frame["split"].unique()]
    return [s for s in SPLIT_ORDER if s in given] + sorted(s for s in given if s not in SPLIT_ORDER)


def summarise(frame: pd.DataFrame) -> str:
    """The printed counts: clips per split × status, and clips kept (every status but ``skipped``) per class × split.

    A multi-label clip (``a|b``) counts once for each of its classes."""
    total = counts(frame)
    head = f"data report: {len(frame)} clips: " + ", ".join(f"{n} {s}" for s, n in total.items())
    if frame.empty:
        return head
    split = frame["split"].replace("", NONE)
    splits = _splits(frame)
    by_status = pd.crosstab(split, frame["status"]).reindex(index=splits, columns=list(STATUSES), fill_value=0)
    by_status["total"] = by_status.sum(axis=1)
    by_status.loc["total"] = by_status.sum(axis=0)
    by_status.index.name, by_status.columns.name = "split", None

    kept = frame.assign(split=split)[frame["status"] != "skipped"]
    kept = kept.assign(label=kept["label"].replace("", NONE).str.split("|")).explode("label")
    labels = sorted(set(frame["label"].replace("", NONE).str.split("|").explode()))
    by_class = pd.crosstab(kept["label"], kept["split"]).reindex(index=labels, columns=splits, fill_value=0)
    by_class["total"] = by_class.sum(axis=1)
    by_class.index.name, by_class.columns.name = "class", None
    return "\n".join([
        head, "", "clips per split and status", _table(by_status), "",
        "clips kept per class and split (every status but skipped)", _table(by_class),
    ])


def _table(table: pd.DataFrame) -> str:
    """A count table as text, its row names left-aligned in the first column."""
    names = [str(n) for n in table.index]
    width = max(len(table.index.name), *map(len, names))
    body = textwrap.dedent(table.to_string(index=False)).splitlines()
    return "\n".join(f"{name:<{width}}  {line}".rstrip() for name, line in zip([table.index.name, *names], body))


def write_report(frame: pd.DataFrame, out_dir: str | Path) -> Path:
    """``<out_dir>/data_report.csv`` (written whole, then renamed: never half a file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "data_report.csv"
    tmp = out_dir / f".data_report.{os.getpid()}.tmp.csv"
    try:
        frame.to_csv(tmp, index=False, columns=list(COLUMNS))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class ProbeProgress(GenerationProgress):
    """``GenerationProgress`` (one line on stderr, clips/s) with a closing line for probing."""

    def close(self) -> None:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        line = f"{self.label}: probed {self.done} clips in {elapsed:.1f} s ({rate:.1f} clips/s)"
        print(f"\r{line}\033[K" if self._tty() else line, file=self._out(), flush=True)


def dataset_records(data_cfg: DictConfig, workers: int = 1) -> tuple[DatasetRecords, Path]:
    """The dataset's records after the integrity rules (``datasets.records_for``) and the folder its paths are
    shown relative to (``data.root``)."""
    from fusionbench.config import data_root
    from fusionbench.data.datasets import records_for

    return records_for(data_cfg, workers=workers), data_root(data_cfg)


def check_data(data_cfg: DictConfig, workers: int = 2, progress: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Read the dataset, probe every file (``workers`` processes) → (the report frame, the reader's warnings)."""
    records, root = dataset_records(data_cfg, workers)
    paths = [str(clip.path) for clip in records.clips]
    shown = ProbeProgress(len(paths), f"[data] probing {data_cfg.dataset} ({root})") if progress else None
    probes = probe_files(paths, workers=workers, progress=shown)
    if shown:
        shown.close()
    frame = report_frame(report_lines(records, probes, float(data_cfg.clip_seconds), root,
                                      int(data_cfg.video.num_frames)))
    warnings = [f"{row.where}: {row.reason}" if row.where else row.reason
                for row in records.report if row.status == "warning"]
    return frame, warnings


def run_report(datamodule: Any) -> pd.DataFrame:
    """The data report of a training run: one line per clip the reader kept — ``skipped`` with the reason a clip was
    left out (a decode error under ``data.on_error=skip``, or ``data.missing_modality=skip``), else the status of
    what the store holds for it (``presence_status``: ``video_missing`` / ``audio_missing``, ``padded`` with the frames
    and seconds of audio padded, ``ok``) — then one per row the reader or the integrity rules left out."""
    from fusionbench.config import data_root

    failed = {str(path): reason for path, reason in datamodule.skipped}
    num_frames = int(datamodule.cfg.video.num_frames)
    stored: dict[int, tuple[str, str]] = {}
    for data in datamodule.data.values():
        for row, audio, video, frames, audio_s in zip(
                data.index.tolist(), data.has_audio.tolist(), data.has_video.tolist(), data.padded_frames.tolist(),
                data.padded_audio_s.tolist()):
            stored[row] = presence_status(audio, video, frames, num_frames, audio_s)
    root = data_root(datamodule.cfg)
    names = datamodule.class_names
    lines = []
    for row, clip in enumerate(datamodule.clips):
        if row in stored:
            status = stored[row]
        else:
            status = ("skipped", failed.get(str(clip.path), "not decoded"))
        lines.append(clip_line(clip, names, *status, root))
    return report_frame(lines + left_out_lines(datamodule.records, root))


def log_data_report(tracked: Any, frame: pd.DataFrame) -> None:
    """Log the report with a run: artifact ``data_report.csv`` and metrics ``data/report/<status>`` (clip counts)."""
    tracked.log_text(frame.to_csv(index=False, columns=list(COLUMNS)), "data_report.csv")
    tracked.log_metrics({f"data/report/{status}": float(n) for status, n in counts(frame).items()})
