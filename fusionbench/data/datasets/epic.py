"""EPIC-KITCHENS-100 (Damen et al., IJCV 2022): action segments cut by timestamp from the untrimmed videos.

- ``annotations`` maps split → CSV; by default whichever of ``EPIC_100_train.csv`` (train) and
  ``EPIC_100_validation.csv`` (val) lie in ``root``. Columns are chosen by header name (the UDA CSVs add a leading
  ``uid``): ``video_id, start_timestamp, stop_timestamp, verb, verb_class, noun, noun_class`` are needed,
  ``narration_id`` / ``participant_id`` / ``narration`` are kept in extras. A CSV without ``verb_class`` (the
  test timestamps) is left out with a reported warning.
- ``target``: ``verb`` (97 classes), ``noun`` (300) or ``action``. An action is the (verb_class, noun_class)
  pair; fusionbench's stated order: the pairs that occur in the annotations read, sorted by (verb_class,
  noun_class), named ``"<verb> / <noun>"``. Every clip keeps ``verb_class`` and ``noun_class`` in extras.
- Class names come from ``verb_classes`` / ``noun_classes`` (``EPIC_100_verb_classes.csv`` etc.:
  ``id,key,instances,category``; the ids fix the indices) when given or present in ``root``; otherwise from the
  annotations' ``verb`` / ``noun`` text, with a reported warning for class ids that occur in no row.
- Segments: ``start_s`` / ``end_s`` from ``HH:MM:SS.ff`` timestamps (not frame numbers, which are at each video's
  native fps), so audio is cut by time. Videos: ``template`` (default ``{participant_id}/videos/{video_id}.MP4``);
  a missing video leaves out (and reports) each of its segments. ``group`` = ``video_id``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from fusionbench.data.datasets.base import (
    annotation_files, header_and_rows, DatasetRecords, FileCheck, ReportRow, error, finish, format_template,
    header_index, manifest_path, media_path, missing_row, parse_int, timestamp_seconds, where,
)
from fusionbench.data.manifest import Clip
from fusionbench.errors import UserError

DEFAULT_ANNOTATIONS = {"train": "EPIC_100_train.csv", "val": "EPIC_100_validation.csv"}
DEFAULT_CLASSES = {"verb": "EPIC_100_verb_classes.csv", "noun": "EPIC_100_noun_classes.csv"}
REQUIRED = ("video_id", "start_timestamp", "stop_timestamp", "verb", "verb_class", "noun", "noun_class")
TARGETS = ("verb", "noun", "action")


def read_classes(path: Path) -> list[str]:
    """``EPIC_100_{verb,noun}_classes.csv`` (``id,key,...``) → keys in id order (ids must be 0 … N-1)."""
    line, header, rows = header_and_rows(path, "empty class file (expected id,key,instances,category)")
    col = header_index(path, line, header, ("id", "key"))
    keys: dict[int, str] = {}
    for line, values in rows:
        if len(values) != len(header):
            raise error(f"{len(values)} fields, header has {len(header)}", path, line)
        index = parse_int(values[col["id"]], "id", where(path, line))
        if index in keys:
            raise error(f"id {index} listed twice", path, line)
        keys[index] = values[col["key"]].strip()
    if sorted(keys) != list(range(len(keys))):
        raise error(f"ids are not 0 … {len(keys) - 1}", path)
    return [keys[i] for i in range(len(keys))]


def read(
    root: Path,
    annotations: Mapping[str, str] | None = None,
    target: str = "verb",
    verb_classes: str | None = None,
    noun_classes: str | None = None,
    template: str = "{participant_id}/videos/{video_id}.MP4",
    check_files: bool = True,
) -> DatasetRecords:
    """Read EPIC-KITCHENS-100 annotation CSVs → one clip per action segment, labelled by ``target``."""
    root = Path(root)
    if target not in TARGETS:
        raise UserError(f"target {target!r} is not one of {', '.join(TARGETS)}", where="data.target")
    files = annotation_files(root, annotations, list(DEFAULT_ANNOTATIONS.items()), "annotation CSV")

    report: list[ReportRow] = []
    rows = []  # (csv path, line, split, fields dict, start_s, end_s, verb_class, noun_class)
    for split, csv_path in files:
        line, header, it = header_and_rows(csv_path)
        if "verb_class" not in [h.strip() for h in header]:
            report.append(ReportRow("warning", "no verb_class column (unlabelled test timestamps): left out",
                                    str(csv_path)))
            continue
        col = header_index(csv_path, line, header, REQUIRED)
        for line, values in it:
            at = where(csv_path, line)
            if len(values) != len(header):
                raise error(f"{len(values)} fields, header has {len(header)}", csv_path, line)
            row = {name: values[i].strip() for name, i in col.items()}
            if not row["video_id"]:
                raise error("empty video_id", csv_path, line)
            row.setdefault("participant_id", row["video_id"].split("_")[0])
            start = timestamp_seconds(row["start_timestamp"], "start_timestamp", at)
            stop = timestamp_seconds(row["stop_timestamp"], "stop_timestamp", at)
            if stop <= start:
                raise error(f"stop_timestamp {row['stop_timestamp']} is not after start_timestamp "
                            f"{row['start_timestamp']}", csv_path, line)
            verb, noun = parse_int(row["verb_class"], "verb_class", at), parse_int(row["noun_class"], "noun_class", at)
            if verb < 0 or noun < 0:
                raise error(f"negative class id (verb_class={verb}, noun_class={noun})", csv_path, line)
            rows.append((csv_path, line, split, row, start, stop, verb, noun))

    sources = [p for _, p in files]
    names = {kind: _class_names(root, kind, given, rows, report, sources)
             for kind, given in (("verb", verb_classes), ("noun", noun_classes))}
    for csv_path, line, _, _, _, _, verb, noun in rows:
        for kind, value in (("verb", verb), ("noun", noun)):
            if value >= len(names[kind]):
                raise error(f"{kind}_class {value} is not in the {len(names[kind])} {kind} classes", csv_path, line)
    if target == "action":
        pairs = sorted({(r[6], r[7]) for r in rows})
        class_names = [f"{names['verb'][v]} / {names['noun'][n]}" for v, n in pairs]
        pair_index = {pair: i for i, pair in enumerate(pairs)}
    else:
        class_names = names[target]

    exists = FileCheck(check_files)
    clips: list[Clip] = []
    for csv_path, line, split, row, start, stop, verb, noun in rows:
        at = where(csv_path, line)
        label = pair_index[(verb, noun)] if target == "action" else verb if target == "verb" else noun
        path = media_path(root, format_template(template, row, at), at)
        if not exists(path):
            report.append(missing_row(path, at, split, class_names[label]))
            continue
        extras = {"group": row["video_id"], "video_id": row["video_id"], "participant_id": row["participant_id"],
                  "verb_class": verb, "noun_class": noun, "line": line, "source": str(csv_path)}
        for key in ("narration_id", "narration"):
            if key in row:
                extras[key] = row[key]
        clips.append(Clip(path, (label,), split, start, stop, extras))
    return finish(clips, class_names, False, report, sources, explicit_classes=target != "action")


def _class_names(
    root: Path, kind: str, given: str | None, rows: list, report: list[ReportRow], sources: list[Path]
) -> list[str]:
    """Keys from the class file (given, or the default name in ``root``), else the annotations' own text."""
    path = manifest_path(root, given) if given else root / DEFAULT_CLASSES[kind]
    if given or path.is_file():
        sources.append(path)
        return read_classes(path)
    seen: dict[int, str] = {}
    for _, _, _, row, _, _, verb, noun in rows:
        seen.setdefault(verb if kind == "verb" else noun, row[kind])
    if not seen:
        return []
    size = max(seen) + 1
    absent = [i for i in range(size) if i not in seen]
    if absent:
        report.append(ReportRow(
            "warning", f"{kind} class ids {absent[:10]}{' …' if len(absent) > 10 else ''} occur in no row and have "
            f"no name; give data.{kind}_classes ({DEFAULT_CLASSES[kind]}) for the official names", ""))
    return [seen.get(i, str(i)) for i in range(size)]
