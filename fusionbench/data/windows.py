"""Where the fixed-length windows of a clip lie: centred for validation and single-window test, W evenly spread
windows for multi-clip evaluation, K evenly spread windows to draw from at train time.

A clip's segment is [start_s, end_s] (a row that cuts a segment from an untrimmed video), else [start_s, the file's
duration] (a trimmed clip: the whole file; the duration from the container's header, ``file_duration``). Window k of
n starts at ``s + (L - w) · (k + ½) / n`` (segment start s, length L, window length w): n = 1 is the centred window,
n > 1 spreads the windows evenly with the same margin at both ends (fusionbench's rule; PySlowFast's multi-view test
uses ``(L - w) · k / n``, which never centres). A segment no longer than the window (within one frame interval,
``w / num_frames``, since container durations round) starts at s; one given by ``end_s`` that is shorter than the
window gets the window centred on it (never before 0), a trimmed one starts at s; both padded as the decoder states.

Training draws one of its K cached windows per clip and epoch (``ClipDataset(pick="random")``): a random window
restricted to K positions, since windows are decoded once into the cache (fusionbench's choice; K = 1 is centred).
"""
from __future__ import annotations

from pathlib import Path

import av

from fusionbench.data.manifest import Clip


def window_start(
    start_s: float, end_s: float | None, clip_seconds: float, window: int = 0, windows: int = 1, tolerance_s: float = 0.0
) -> float:
    """The start of window ``window`` of ``windows`` over the segment [start_s, end_s] (None: unknown end)."""
    if not 0 <= window < windows:
        raise ValueError(f"window {window} is not in [0, {windows})")
    if end_s is None:
        return start_s
    length = end_s - start_s
    if length < clip_seconds:  # a short segment: centred on it, never before the file's start
        return max(0.0, start_s + length / 2 - clip_seconds / 2)
    if length <= clip_seconds + tolerance_s:
        return start_s
    return start_s + (length - clip_seconds) * (window + 0.5) / windows


def file_duration(path: str | Path) -> float | None:
    """The file's duration in seconds from its container header (no decoding); None if it states none or cannot be
    opened (the decoder then reports the file)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, OSError, ValueError):
        return None


def segment_window_start(start_s: float, end_s: float | None, path: str | Path, clip_seconds: float,
                         num_frames: int, window: int = 0, windows: int = 1, duration: float | None = None) -> float:
    """``window_start`` over a clip's segment [start_s, end_s]; a trimmed clip (``end_s`` None) ends where its file
    does (``duration``, or its header's ``file_duration``), within one frame interval."""
    if end_s is not None:
        return window_start(start_s, end_s, clip_seconds, window, windows)
    end = duration if duration is not None else file_duration(path)
    tolerance_s = clip_seconds / num_frames
    if end is None or end - start_s <= clip_seconds + tolerance_s:
        return start_s  # no longer than the window: it starts where the row says (padded at the end, or past it)
    return window_start(start_s, end, clip_seconds, window, windows)


def clip_window_start(clip: Clip, clip_seconds: float, num_frames: int, window: int = 0, windows: int = 1,
                      duration: float | None = None) -> float:
    """``segment_window_start`` of a clip record."""
    return segment_window_start(clip.start_s, clip.end_s, clip.path, clip_seconds, num_frames, window, windows,
                                duration)


def resolve_window(path: str | Path, kwargs: dict) -> dict:
    """A decode job's kwargs with its ``window`` entry ({start_s, end_s, window, windows}) resolved to ``start_s``
    (in the worker that decodes it: a trimmed clip's duration is read from its header there, in parallel)."""
    if "window" not in kwargs:
        return kwargs
    kwargs = dict(kwargs)
    w = kwargs.pop("window")
    kwargs["start_s"] = segment_window_start(w["start_s"], w["end_s"], path, kwargs["clip_seconds"],
                                             kwargs["num_frames"], w["window"], w["windows"])
    return kwargs
