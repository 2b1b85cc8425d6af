"""Kinetics-400/600/700 (CVDF release) and Kinetics-Sounds (a class subset of Kinetics-400).

- ``annotations`` maps split → CSV (each row's split is its ``split`` column); by default whichever of
  ``annotations/{train,val,test}.csv`` exist. Columns are chosen by header name:
  ``label,youtube_id,time_start,time_end,split`` (+ ``is_cc`` in the crawler / K700 CSVs, kept in extras);
  labels may be quoted. A CSV without a ``label`` column (the K600/K700 test sets) is left out with a reported
  warning.
- Files: ``template`` (default ``{split}/{ytid}_{start:06d}_{end:06d}.mp4``, fields ``ytid``, ``start``, ``end``,
  ``label``, ``split`` = the CSV's split text). When that file is absent the reader looks the YouTube id up among
  the files of ``<root>/<split>/`` and its sub-folders (the by-class layout ``{split}/{label}/...`` of CVDF's
  ``arrange_by_classes.py``; the id is the first 11 characters of the name) for a file with the template's name
  in any container (``.mkv``, ``.webm``) or named by the id alone; another window of the same video does not
  count. Still absent → reported as missing.
- Class names: sorted labels, or the lines of ``class_list`` (fixes the index order).
- Kinetics-Sounds (``read_sounds``) has no CSV of its own: ``class_list`` (required) names its classes, rows of
  other classes are left out (counted in one report warning), and a listed name that matches no label is a
  reported warning; none matching is an error. Names match after case folding and ``_`` → space (fusionbench's
  choice: some CSV copies write ``air_drumming``).
- ``group`` = the YouTube id. Files hold the ~10-s clip (``start_s = 0``); ``untrimmed=True`` cuts
  ``[time_start, time_end)`` from whole videos.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from fusionbench.data.datasets.base import (
    annotation_files, header_and_rows, MEDIA_SUFFIXES, DatasetRecords, FileCheck, ReportRow, error, finish,
    format_template, header_index, manifest_path, media_path, missing_row, parse_int, read_class_list, split_name,
    where,
)
from fusionbench.data.manifest import Clip

DEFAULT_ANNOTATIONS = {"train": "annotations/train.csv", "val": "annotations/val.csv", "test": "annotations/test.csv"}
REQUIRED = ("label", "youtube_id", "time_start", "time_end", "split")
YTID_LEN = 11


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").casefold().split())


class _FolderIndex:
    """YouTube id → media files under ``<root>/<split>/`` (directly and one folder down), scanned once per split."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_split: dict[str, dict[str, list[Path]]] = {}

    def find(self, split_dir: str, ytid: str, stem: str) -> Path | None:
        if split_dir not in self._by_split:
            self._by_split[split_dir] = self._scan(self.root / split_dir)
        found = self._by_split[split_dir].get(ytid, [])
        for name in (stem, ytid):  # the template's name (any container), else a file named by the id alone
            match = next((p for p in found if p.stem == name), None)
            if match is not None:
                return match
        return None  # a file of another window of the same video is not this clip

    @staticmethod
    def _scan(folder: Path) -> dict[str, list[Path]]:
        index: dict[str, list[Path]] = {}
        if not folder.is_dir():
            return index
        todo = [(folder, 0)]
        while todo:
            current, depth = todo.pop()
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir() and depth == 0:
                        todo.append((Path(entry.path), 1))
                    elif entry.is_file() and Path(entry.name).suffix.lower() in MEDIA_SUFFIXES:
                        index.setdefault(entry.name[:YTID_LEN], []).append(Path(entry.path))
        for paths in index.values():
            paths.sort()
        return index


def read(
    root: Path,
    annotations: Mapping[str, str] | None = None,
    template: str = "{split}/{ytid}_{start:06d}_{end:06d}.mp4",
    class_list: str | None = None,
    untrimmed: bool = False,
    check_files: bool = True,
    subset: bool = False,
) -> DatasetRecords:
    """Read Kinetics CSVs → clips. ``subset=True`` (Kinetics-Sounds) keeps only the rows of ``class_list``."""
    root = Path(root)
    files = annotation_files(root, annotations, list(DEFAULT_ANNOTATIONS.items()), "annotation CSV")

    report: list[ReportRow] = []
    rows = []  # (csv path, line, label, ytid, start, end, split text, split, is_cc)
    for _, csv_path in files:
        line, header, it = header_and_rows(csv_path)
        if "label" not in [h.strip() for h in header]:
            report.append(ReportRow("warning", "no label column (an unlabelled test set): left out", str(csv_path)))
            continue
        col = header_index(csv_path, line, header, REQUIRED)
        for line, values in it:
            at = where(csv_path, line)
            if len(values) != len(header):
                raise error(f"{len(values)} fields, header has {len(header)}", csv_path, line)
            get = lambda c: values[col[c]].strip()  # noqa: E731
            label, ytid = get("label"), get("youtube_id")
            if not label or not ytid:
                raise error("empty label or youtube_id", csv_path, line)
            start, end = parse_int(get("time_start"), "time_start", at), parse_int(get("time_end"), "time_end", at)
            if start < 0 or end <= start:
                raise error(f"bad window time_start={start}, time_end={end}", csv_path, line)
            is_cc = get("is_cc") if "is_cc" in col else None
            rows.append((csv_path, line, label, ytid, start, end, get("split"), split_name(get("split"), at), is_cc))

    labels = sorted({r[2] for r in rows})
    sources = [p for _, p in files]
    if class_list:
        list_path = manifest_path(root, class_list)
        class_names = read_class_list(list_path)
        sources.append(list_path)
        by_norm = {_norm(name): i for i, name in enumerate(class_names)}
        to_index = {label: by_norm[_norm(label)] for label in labels if _norm(label) in by_norm}
        matched = {to_index[label] for label in to_index}
        unmatched = [name for i, name in enumerate(class_names) if i not in matched]
        report += [
            ReportRow("warning", f"class {name!r} of the class list matches no label in the annotations",
                      str(list_path), label=name)
            for name in unmatched
        ]
        if not matched:
            raise error(f"none of the {len(class_names)} classes matches a label of the annotations "
                        f"(e.g. {labels[:3]})", list_path)
    else:
        if subset:
            raise error("Kinetics-Sounds needs data.class_list (a file with one class name per line)", root)
        class_names = labels
        to_index = {label: i for i, label in enumerate(labels)}

    exists, folders = FileCheck(check_files), _FolderIndex(root)
    clips: list[Clip] = []
    left_out = 0
    for csv_path, line, label, ytid, start, end, split_text, split, is_cc in rows:
        at = where(csv_path, line)
        if label not in to_index:
            if subset:
                left_out += 1
                continue
            raise error(f"label {label!r} is not in the class list {class_list}", csv_path, line)
        fields = dict(ytid=ytid, start=start, end=end, label=label, split=split_text)
        path = media_path(root, format_template(template, fields, at), at)
        if check_files and not exists(path):
            found = folders.find(split_text, ytid, path.stem)
            if found is None:
                report.append(missing_row(path, at, split, label))
                continue
            path = found
        start_s, end_s = (float(start), float(end)) if untrimmed else (0.0, None)
        extras = {"group": ytid, "ytid": ytid, "source_start_s": float(start), "source_end_s": float(end),
                  "line": line, "source": str(csv_path)}
        if is_cc is not None:
            extras["is_cc"] = is_cc
        clips.append(Clip(path, (to_index[label],), split, start_s, end_s, extras))
    if left_out:
        report.append(ReportRow("warning", f"{left_out} rows of classes outside the class list left out",
                                ", ".join(str(p) for _, p in files)))
    return finish(clips, class_names, False, report, sources, explicit_classes=bool(class_list))


def read_sounds(
    root: Path,
    class_list: str | None = None,
    annotations: Mapping[str, str] | None = None,
    template: str = "{split}/{ytid}_{start:06d}_{end:06d}.mp4",
    untrimmed: bool = False,
    check_files: bool = True,
) -> DatasetRecords:
    """Kinetics-Sounds: the Kinetics-400 rows whose label is in ``class_list`` (e.g. L3-Net's 34 classes)."""
    return read(root, annotations=annotations, template=template, class_list=class_list, untrimmed=untrimmed,
                check_files=check_files, subset=True)
