"""AudioSet (Gemmeke et al., ICASSP 2017), multi-label: the segment CSVs and ``class_labels_indices.csv`` as published.

- ``*_segments.csv``: ``#`` header lines, then ``YTID, start_seconds, end_seconds, positive_labels`` separated by a
  comma and a space (``csv.reader(skipinitialspace=True)``), 3-decimal floats, and the labels a quoted,
  comma-separated list of MIDs (``"/m/09x0r,/t/dd00088"``). A MID missing from the class file is an error naming
  the line.
- ``class_labels_indices.csv`` (``index,mid,display_name``, 527 rows) fixes the index order; class names are the
  display names.
- ``annotations`` maps split → segment CSV; by default whichever of ``balanced_train_segments.csv`` /
  ``unbalanced_train_segments.csv`` (train) and ``eval_segments.csv`` (test) lie in ``root``.
- Media naming is not standardised, so ``template`` is configurable: fields ``ytid``, ``start`` / ``end`` (float
  seconds), ``start_ms`` / ``end_ms`` (int), ``split``; e.g. ``Y{ytid}.wav`` (PANNs, the default),
  ``{ytid}_{start_ms}_{end_ms}.wav``, ``{ytid}_{start:.1f}.wav``, ``{ytid}.mp4``.
- Files hold the 10-s segment (``start_s = 0``); with ``untrimmed=True`` they are whole videos and the segment
  window of the CSV is cut from them. Missing files are reported and left out; ``group`` = the YouTube id.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from fusionbench.data.datasets.base import (
    annotation_files, header_and_rows, DatasetRecords, FileCheck, ReportRow, csv_rows, error, finish,
    format_template, header_index, manifest_path, media_path, missing_row, parse_float, parse_int, where,
)
from fusionbench.data.manifest import Clip

DEFAULT_SEGMENTS = {
    "balanced_train_segments.csv": "train", "unbalanced_train_segments.csv": "train", "eval_segments.csv": "test",
}


def read_class_labels(path: Path) -> tuple[list[str], dict[str, int]]:
    """``class_labels_indices.csv`` → (display names in index order, MID → index)."""
    line, header, rows = header_and_rows(path, "empty class file (expected index,mid,display_name)")
    col = header_index(path, line, header, ("index", "mid", "display_name"))
    names: list[str] = []
    mids: dict[str, int] = {}
    for line, values in rows:
        at = where(path, line)
        if len(values) != len(header):
            raise error(f"{len(values)} fields, header has {len(header)}", path, line)
        index = parse_int(values[col["index"]], "index", at)
        mid = values[col["mid"]].strip()
        if index != len(names):
            raise error(f"index {index} out of order (expected {len(names)})", path, line)
        if mid in mids:
            raise error(f"MID {mid} listed twice", path, line)
        mids[mid] = index
        names.append(values[col["display_name"]].strip())
    if not names:
        raise error("no classes", path)
    return names, mids


def read(
    root: Path,
    annotations: Mapping[str, str] | None = None,
    class_labels: str = "class_labels_indices.csv",
    template: str = "Y{ytid}.wav",
    untrimmed: bool = False,
    check_files: bool = True,
) -> DatasetRecords:
    """Read AudioSet segment CSVs → multi-label clips (labels: sorted class indices)."""
    root = Path(root)
    class_path = manifest_path(root, class_labels)
    class_names, mids = read_class_labels(class_path)
    defaults = [(split, name) for name, split in DEFAULT_SEGMENTS.items()]
    files = annotation_files(root, annotations, defaults, "segment CSV")

    exists = FileCheck(check_files)
    clips: list[Clip] = []
    report: list[ReportRow] = []
    for split, csv_path in files:
        n_rows = 0
        for line, values in csv_rows(csv_path, skip_comments=True, skipinitialspace=True):
            at = where(csv_path, line)
            if len(values) != 4:
                raise error(f"{len(values)} fields; expected YTID, start_seconds, end_seconds, positive_labels",
                            csv_path, line)
            ytid, start_text, end_text, label_text = (v.strip() for v in values)
            start, end = parse_float(start_text, "start_seconds", at), parse_float(end_text, "end_seconds", at)
            if not ytid or start < 0 or end <= start:
                raise error(f"bad segment {ytid!r} [{start_text}, {end_text}]", csv_path, line)
            if not label_text:
                raise error("no positive_labels", csv_path, line)
            labels = set()
            for mid in (m.strip() for m in label_text.split(",")):
                if mid not in mids:
                    raise error(f"unknown label MID {mid!r} (not in {class_labels})", csv_path, line)
                labels.add(mids[mid])
            n_rows += 1
            fields = dict(ytid=ytid, start=start, end=end, start_ms=round(start * 1000), end_ms=round(end * 1000),
                          split=split)
            rel = format_template(template, fields, at)
            path = media_path(root, rel, at)
            if not exists(path):
                report.append(missing_row(path, at, split, "|".join(class_names[i] for i in sorted(labels))))
                continue
            start_s, end_s = (start, end) if untrimmed else (0.0, None)
            extras = {"group": ytid, "ytid": ytid, "segment_start_s": start, "segment_end_s": end, "line": line,
                      "source": str(csv_path)}
            clips.append(Clip(path, tuple(sorted(labels)), split, start_s, end_s, extras))
        if n_rows == 0:
            raise error("no segments", csv_path)
    return finish(clips, class_names, True, report, [p for _, p in files] + [class_path], explicit_classes=True)
