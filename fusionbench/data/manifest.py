"""The generic ``clips.csv`` manifest: one row per clip, ``path,label[,start_s,end_s,split]`` plus any extra columns.

Rules:

- ``path`` is relative to ``root`` if given, else to the CSV's folder (absolute paths are kept).
- ``label`` is an integer class index or a class name; ``|`` separates the labels of a multi-label clip
  (``multilabel=True``; a ``|`` in a single-label manifest is an error). ``read_manifest`` (lenient, low level): if
  every label is a non-negative integer, labels are indices and the class names are ``"0" … str(max)``; otherwise
  names map to indices in sorted order. Datasets are read by the ``clips`` reader (``datasets/clips.py``), whose
  label rules are strict (no mixed, sparse or 1-based integer labels without a class list).
- ``start_s`` / ``end_s`` (seconds, optional, empty = 0 / until the end) cut the clip from a longer file.
- ``split`` (optional) is train / val / test (aliases: valid, validation, dev → val; eval → test); rows
  without one get ``None`` (``fusionbench.data.integrity.assign_splits`` gives them one, per source video).
- Any other column is kept, as a string, in ``Clip.extras``.

A malformed file raises ``ManifestError`` naming the file, the line and what is wrong.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from fusionbench.errors import UserError

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}
KNOWN_COLUMNS = ("path", "label", "start_s", "end_s", "split")


class ManifestError(UserError, ValueError):
    """A manifest that cannot be read: ``where`` is the file, the reason names the line.

    ``ManifestError(reason, where=csv_path)``; the older one-argument form ``ManifestError("<file>: <reason>")``
    still works (``where`` is then None and the message is as given)."""

    def __init__(self, reason: str, where: str | Path | None = None) -> None:
        super().__init__(reason, str(where) if where is not None else None)


@dataclass(frozen=True)
class Clip:
    path: Path
    labels: tuple[int, ...]  # one index (multiclass) or any number (multi-label)
    split: str | None = None  # train | val | test | None (not given)
    start_s: float = 0.0
    end_s: float | None = None
    extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> int:
        """The single class index of a multiclass clip."""
        if len(self.labels) != 1:
            raise ValueError(f"{self.path}: {len(self.labels)} labels, not a single-label clip")
        return self.labels[0]


def _is_index(value: str) -> bool:
    return value.isdigit()  # non-negative integer


@dataclass(frozen=True)
class ManifestRow:
    """One parsed row of a ``clips.csv``, before labels become indices and paths are resolved."""

    line: int
    path: str  # as written
    labels: tuple[str, ...]  # label texts (several: multi-label)
    split: str | None
    start_s: float
    end_s: float | None
    extras: dict[str, str]


def read_rows(csv_path: str | Path, multilabel: bool = False) -> list[ManifestRow]:
    """Parse a ``clips.csv`` (header, fields, labels, windows, splits) → its rows in file order (module rules)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ManifestError("manifest not found", where=csv_path)
    from fusionbench.data.datasets.base import read_text  # UTF-8 check naming the line

    reader = csv.reader(io.StringIO(read_text(csv_path), newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ManifestError("empty file (expected a header path,label[,start_s,end_s,split])",
                            where=csv_path) from None
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise ManifestError(
            f"line 1: header {','.join(header)!r} lacks column(s) {', '.join(missing)} "
            "(expected path,label[,start_s,end_s,split])", where=csv_path
        )
    if len(set(header)) != len(header):
        raise ManifestError(f"line 1: duplicate column names in {','.join(header)!r}", where=csv_path)
    out: list[ManifestRow] = []
    try:
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue  # blank line
            if len(values) != len(header):
                raise ManifestError(f"line {line}: {len(values)} fields, header has {len(header)}", where=csv_path)
            row = dict(zip(header, (v.strip() for v in values)))
            if not row["path"]:
                raise ManifestError(f"line {line}: empty path", where=csv_path)
            parts = [p.strip() for p in row["label"].split("|")] if row["label"] else []
            if not parts or any(not p for p in parts):
                raise ManifestError(f"line {line}: empty label in {row['label']!r}", where=csv_path)
            if len(parts) > 1 and not multilabel:
                raise ManifestError(
                    f"line {line}: several labels {row['label']!r} in a single-label manifest "
                    "(set data.multilabel=true for multi-label data)", where=csv_path
                )
            start_s = _float(row.get("start_s", ""), 0.0, csv_path, line, "start_s")
            end_s = _float(row.get("end_s", ""), None, csv_path, line, "end_s")
            if start_s < 0 or (end_s is not None and end_s <= start_s):
                raise ManifestError(f"line {line}: bad window start_s={start_s}, end_s={end_s}", where=csv_path)
            split = row.get("split", "") or None
            if split is not None:
                if split.lower() not in SPLIT_ALIASES:
                    raise ManifestError(
                        f"line {line}: unknown split {split!r} (expected train, val or test)", where=csv_path
                    )
                split = SPLIT_ALIASES[split.lower()]
            extras = {k: v for k, v in row.items() if k not in KNOWN_COLUMNS}
            out.append(ManifestRow(line, row["path"], tuple(parts), split, start_s, end_s, extras))
    except csv.Error as exc:
        raise ManifestError(f"line {reader.line_num}: malformed CSV: {exc}", where=csv_path) from None
    if not out:
        raise ManifestError("no clips", where=csv_path)
    return out


def read_manifest(
    csv_path: str | Path, root: str | Path | None = None, multilabel: bool = False
) -> tuple[list[Clip], list[str]]:
    """Read a ``clips.csv`` → (clips in file order, class names indexed by label): the lenient low-level form.

    Datasets are read through ``fusionbench.data.datasets.records_for`` (the ``clips`` reader), which adds the
    path rules, the label rules and the integrity rules on top of these rows.
    """
    csv_path = Path(csv_path)
    rows = read_rows(csv_path, multilabel)
    base = Path(root) if root else csv_path.parent
    all_labels = [p for row in rows for p in row.labels]
    if all(_is_index(p) for p in all_labels):
        class_names = [str(i) for i in range(max(int(p) for p in all_labels) + 1)]
        to_index = {p: int(p) for p in set(all_labels)}
    else:
        class_names = sorted(set(all_labels))
        to_index = {name: i for i, name in enumerate(class_names)}
    clips = []
    for row in rows:
        path = Path(row.path)
        clips.append(
            Clip(
                path=path if path.is_absolute() else base / path,
                labels=tuple(sorted({to_index[p] for p in row.labels})),
                split=row.split,
                start_s=row.start_s,
                end_s=row.end_s,
                extras=dict(row.extras),
            )
        )
    return clips, class_names


def _float(value: str, default: float | None, csv_path: Path, line: int, column: str) -> float | None:
    if value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ManifestError(f"line {line}: {column}={value!r} is not a number", where=csv_path) from None


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (the manifest part of the cache key)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def media_fingerprint(paths: Iterable[str | Path]) -> str:
    """sha256 over each media file's path, size and modification time (a missing file counts as such).

    The media part of the cache key: a file rewritten in place (a regenerated synthetic set, a re-encoded clip) gets
    a new key although the manifest is unchanged. Stat only, so ~10 ms for thousands of files, not a read of each.
    """
    digest = hashlib.sha256()
    for path in sorted({str(p) for p in paths}):
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()
