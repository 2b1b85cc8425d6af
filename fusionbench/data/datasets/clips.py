"""The generic ``clips.csv`` (``manifest.read_rows`` parses it: ``path,label[,start_s,end_s,split]`` + any columns).

Rules on top of the parsing (fusionbench's own):

- Paths: relative paths resolve inside ``root``; ``..`` escapes are refused; absolute paths only with
  ``allow_absolute=True`` (``data.options.allow_absolute``); only media containers (``base.MEDIA_SUFFIXES``).
- Labels: all class names (index order: sorted, or the lines of ``class_list``), or all integer indices. Mixed
  integer and text labels are an error. Integer labels must be 0..K-1 with every index used, unless ``class_list``
  names the classes (then any index below its length); labels counted from 1 need ``first_label=1`` (1..K → 0..K-1)
  or a class list — never a silent empty class 0.
- ``group`` (the source video, for per-video splits): a ``group`` column if there is one, else
  ``integrity.file_group`` (YouTube id of a ``{ytid}_{start:06d}`` name, else the parent folder).
- A media file that does not exist is not checked here: decoding reports it under ``data.on_error``.
"""
from __future__ import annotations

import os
from pathlib import Path

from fusionbench.data.datasets.base import (
    DatasetRecords, finish, manifest_path, media_path, media_suffix_check, read_class_list, where,
)
from fusionbench.data.integrity import file_group
from fusionbench.data.manifest import Clip, read_rows
from fusionbench.errors import UserError


def read(
    root: Path,
    manifest: str = "clips.csv",
    class_list: str | None = None,
    multilabel: bool = False,
    allow_absolute: bool = False,
    first_label: int = 0,
) -> DatasetRecords:
    """Read a generic ``clips.csv`` (inside ``root`` unless absolute) → clips, class names (see the module rules)."""
    root = Path(root)
    csv_path = manifest_path(root, manifest)
    rows = read_rows(csv_path, multilabel)
    if first_label not in (0, 1):
        raise UserError(f"first_label={first_label!r} must be 0 or 1", where="data.options.first_label")
    sources = [csv_path]
    texts = [p for row in rows for p in row.labels]
    ints = [(row.line, p) for row in rows for p in row.labels if p.isdigit()]
    names = [(row.line, p) for row in rows for p in row.labels if not p.isdigit()]
    if ints and names:
        raise UserError(f"mixed integer and text labels (line {ints[0][0]}: {ints[0][1]!r}, line {names[0][0]}: "
                        f"{names[0][1]!r}); write every label as a class name, or every one as an index",
                        where=str(csv_path))
    explicit = class_list is not None
    if explicit:
        list_path = manifest_path(root, class_list)
        class_names = read_class_list(list_path)
        sources.append(list_path)
    elif names:
        class_names = sorted(set(texts))
    else:
        class_names = _integer_classes(sorted({int(p) for p in texts}), first_label, csv_path)
    to_index = {name: i for i, name in enumerate(class_names)}

    clips = []
    for row in rows:
        at = where(csv_path, row.line)
        labels = []
        for text in row.labels:
            if text.isdigit():
                index = int(text) - first_label
                if not 0 <= index < len(class_names):
                    raise UserError(f"label {text} is outside the {len(class_names)} classes "
                                    f"({'of the class list' if explicit else f'first_label={first_label}'})", where=at)
            elif text in to_index:
                index = to_index[text]
            else:
                raise UserError(f"label {text!r} is not in the class list {class_list}", where=at)
            labels.append(index)
        path = _path(root, row.path, at, allow_absolute)
        label_text = row.labels[0] if len(row.labels) == 1 else ""
        group = row.extras.get("group") or file_group(path, root, label_text)
        extras = {**row.extras, "group": group, "line": row.line, "source": str(csv_path)}
        clips.append(Clip(path, tuple(sorted(set(labels))), row.split, row.start_s, row.end_s, extras))
    records = finish(clips, class_names, multilabel, [], sources)
    records.explicit_classes = explicit
    return records


def _integer_classes(used: list[int], first_label: int, csv_path: Path) -> list[str]:
    """Class names "0" … "K-1" for integer labels that use every index (after ``first_label``), else an error."""
    low, high = used[0], used[-1]
    if first_label == 0 and low == 1 and used == list(range(1, high + 1)):
        raise UserError(f"integer labels run 1..{high}: index 0 would be a class with no clip; set "
                        "data.options.first_label: 1 (maps 1..K to 0..K-1) or pass data.options.class_list",
                        where=str(csv_path))
    if low < first_label:
        raise UserError(f"label {low} is below first_label={first_label}", where=str(csv_path))
    if used != list(range(first_label, high + 1)):
        shown = ", ".join(map(str, used[:6])) + (", ..." if len(used) > 6 else "")
        raise UserError(f"sparse integer labels ({shown}: {len(used)} of {high + 1 - first_label} indices used); "
                        "pass data.options.class_list naming every class in index order", where=str(csv_path))
    return [str(i) for i in range(first_label, high + 1)]  # the label texts, in index order


def _path(root: Path, text: str, at: str, allow_absolute: bool) -> Path:
    """Inside ``root`` (``base.media_path``), or an absolute path where the config allows it."""
    if os.path.isabs(text):
        if not allow_absolute:
            raise UserError(f"absolute media path {text!r} refused (paths resolve inside data.root; set "
                            "data.options.allow_absolute: true to allow them)", where=at)
        media_suffix_check(text, at)
        return Path(os.path.normpath(text))
    return media_path(root, text, at)
