"""VGGSound (Chen et al., ICASSP 2020): ``vggsound.csv`` as published, and the 2-column ``file,label`` form.

- ``vggsound.csv`` (option ``annotations``) has no header and 4 columns ``youtube_id,start_seconds,label,split``
  (``start_seconds`` an integer, split train or test); labels with commas are double-quoted
  (``"heart sounds, heartbeat"``), so rows are parsed with ``csv.reader``. Clip files are named by ``template``
  (default ``{ytid}_{start:06d}.mp4``, as the official repo and the usual mirrors; ``.wav`` / ``.flac`` for
  audio-only copies), fields ``ytid``, ``start`` (int), ``end`` (``start + 10``), ``label``, ``split``.
- The 2-column form (the official repo's ``data/test.csv``: ``glLQrEijrKg_000300.mp4,playing hammond organ``,
  optionally under a ``file,label`` header) names each file itself; its clips get ``split`` (default none).
- A file that does not exist (YouTube take-downs) is left out and reported, not an error unless none remain.
- Class names are sorted label strings, or the lines of ``class_list`` (which fixes the index order; a label it
  lacks is an error naming the line, a listed name that no row uses is a reported warning).
- ``group`` = the YouTube id (2-column form: the first 11 characters of a ``{ytid}_NNNNNN`` name, else the stem).
- The files hold the 10-s clip, so ``start_s = 0``; with ``untrimmed=True`` they are whole videos and the clip is
  cut at ``[start, start + 10)`` (fusionbench's option).
"""
from __future__ import annotations

import re
from pathlib import Path

from fusionbench.data.datasets.base import (
    DatasetRecords, FileCheck, ReportRow, csv_rows, error, finish, format_template, manifest_path, media_path,
    missing_row, parse_int, read_class_list, split_name, where,
)
from fusionbench.data.manifest import Clip

CLIP_SECONDS = 10
_YTID_NAME = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<start>\d+)$")


def read(
    root: Path,
    annotations: str = "vggsound.csv",
    template: str = "{ytid}_{start:06d}.mp4",
    class_list: str | None = None,
    split: str | None = None,
    untrimmed: bool = False,
    check_files: bool = True,
) -> DatasetRecords:
    """Read VGGSound → single-label clips; the template (inside ``root``) names each clip file."""
    root = Path(root)
    csv_path = manifest_path(root, annotations)
    fixed_split = split_name(split, "data.split option") if split else None
    rows: list[tuple[int, list[str]]] = []
    for line, values in csv_rows(csv_path):
        values = [v.strip() for v in values]
        if line == 1 and [v.lower() for v in values] == ["file", "label"]:
            continue  # optional header of the 2-column form
        rows.append((line, values))
    if not rows:
        raise error("no rows", csv_path)
    width = len(rows[0][1])
    if width not in (2, 4):
        raise error(f"{width} fields; expected youtube_id,start_seconds,label,split or file,label",
                    csv_path, rows[0][0])

    if split and width == 4:
        raise error("data.split applies to the 2-column file,label form only (this CSV has a split column)",
                    csv_path)
    parsed = []  # (line, media path, label, split, ytid, start)
    for line, values in rows:
        at = where(csv_path, line)
        if len(values) != width:
            raise error(f"{len(values)} fields, the first row has {width}", csv_path, line)
        if width == 4:
            ytid, start_text, label, split_text = values
            start = parse_int(start_text, "start_seconds", at)
            row_split = split_name(split_text, at)
            rel = format_template(
                template, dict(ytid=ytid, start=start, end=start + CLIP_SECONDS, label=label, split=split_text), at
            )
        else:
            rel, label = values
            stem = Path(rel).stem
            m = _YTID_NAME.match(stem)
            ytid, start = (m["ytid"], int(m["start"])) if m else (stem, 0)
            row_split = fixed_split
        if not ytid or not label:
            raise error("empty youtube id, file or label", csv_path, line)
        parsed.append((line, media_path(root, rel, at), label, row_split, ytid, start))

    report: list[ReportRow] = []
    sources = [csv_path]
    if class_list:
        list_path = manifest_path(root, class_list)
        class_names = read_class_list(list_path)
        sources.append(list_path)
        used = {label for _, _, label, *_ in parsed}
        report += [
            ReportRow("warning", f"class {name!r} of the class list matches no label", str(list_path), label=name)
            for name in class_names if name not in used
        ]
    else:
        class_names = sorted({label for _, _, label, *_ in parsed})
    to_index = {name: i for i, name in enumerate(class_names)}

    exists = FileCheck(check_files)
    clips = []
    for line, path, label, row_split, ytid, start in parsed:
        if label not in to_index:
            raise error(f"label {label!r} is not in the class list {class_list}", csv_path, line)
        if not exists(path):
            report.append(missing_row(path, where(csv_path, line), row_split, label))
            continue
        start_s, end_s = (float(start), float(start + CLIP_SECONDS)) if untrimmed else (0.0, None)
        extras = {"group": ytid, "ytid": ytid, "source_start_s": float(start), "line": line,
                  "source": str(csv_path)}
        clips.append(Clip(path, (to_index[label],), row_split, start_s, end_s, extras))
    return finish(clips, class_names, False, report, sources, explicit_classes=bool(class_list))

