"""The one interface every dataset reader implements, and the helpers they share.

A reader is a function ``read(root: Path, **options) -> DatasetRecords``: it parses the dataset's own published
annotation files as they are downloaded and yields ``Clip`` records (``fusionbench.data.manifest.Clip``), so the
datamodule never needs to know which dataset it reads. Every clip carries ``extras["group"]``, the source video it
was cut from (YouTube id, EPIC ``video_id``, ...), so automatic splits can be assigned per video, never per file,
and ``extras["source"]`` / ``extras["line"]``, the annotation file and line it came from (named by integrity errors).

Rules shared by all readers (fusionbench's own):

- Malformed input raises ``UserError(reason, where="<file>, line N")``; a file that is not UTF-8 names the line.
- A media file that does not exist (YouTube take-downs are common) is left out and reported, one ``ReportRow``
  each; it is an error only when no clip remains.
- Paths named by the data resolve inside ``root``: ``..`` escapes and absolute paths are refused, and only media
  containers (by suffix) are accepted, never playlists (m3u8, ffconcat, ...) that point at other files.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

from fusionbench.data.manifest import SPLIT_ALIASES, Clip
from fusionbench.errors import UserError

MEDIA_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpeg", ".mpg",  # video containers
    ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus",  # audio files
})
STATUSES = ("missing", "skipped", "warning")


@dataclass(frozen=True)
class ReportRow:
    """One reported row: a clip left out (``missing``: its file does not exist; ``skipped``: its row was not
    usable) or a ``warning`` about the dataset (e.g. a class-list name that matches no label)."""

    status: str  # one of STATUSES
    reason: str
    where: str = ""  # "<annotation file>, line N" (or the file alone)
    path: str = ""  # the media path the row names, if any
    split: str | None = None
    label: str = ""  # the label text of the row, if any


@dataclass
class DatasetRecords:
    """What a reader returns: the clips, the class names in index order, and the report of what was left out."""

    clips: list[Clip]
    class_names: list[str]
    multilabel: bool
    report: list[ReportRow] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)  # every annotation / class file read (for the run's identity)
    explicit_classes: bool = False  # the class names come from a class file (a class unseen in train: a warning)
    fixed_splits: bool = False  # every clip's split is final (no split is carved from train: the synthetic sets)

    def counts(self) -> Counter[str]:
        """Report rows per status, e.g. ``{"missing": 3, "warning": 1}``."""
        return Counter(row.status for row in self.report)


class Reader(Protocol):
    def __call__(self, root: Path, **options: Any) -> DatasetRecords: ...


def where(path: Path, line: int | None = None) -> str:
    return f"{path}, line {line}" if line is not None else str(path)


def error(reason: str, path: Path, line: int | None = None) -> UserError:
    """``UserError(reason, where="<path>, line N")``, to ``raise``."""
    return UserError(reason, where=where(path, line))


def read_text(path: Path) -> str:
    """The whole file as text (UTF-8, a BOM dropped); not UTF-8 → ``UserError`` naming the file and the line."""
    if not path.is_file():
        raise UserError("file not found", where=str(path))
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); re-save the file as UTF-8",
            where=where(path, line),
        ) from None


def csv_rows(path: Path, skip_comments: bool = False, **fmt: Any) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` for each non-blank row (``#`` lines too when ``skip_comments``), via ``csv.reader``."""
    text = read_text(path)
    if skip_comments:  # blank ``#`` lines before parsing (a quote in one cannot open a field); line numbers kept
        text = "".join("\n" if ln.lstrip().startswith("#") else ln for ln in text.splitlines(keepends=True))
    reader = csv.reader(io.StringIO(text, newline=""), **fmt)
    try:
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            yield line, values
    except csv.Error as exc:
        raise UserError(f"malformed CSV: {exc}", where=where(path, reader.line_num)) from None


def header_index(path: Path, line: int, header: list[str], required: tuple[str, ...]) -> dict[str, int]:
    """Column name → position, by header name; a required column that is absent is an error."""
    names = [h.strip() for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        raise UserError(
            f"header {','.join(names)!r} lacks column(s) {', '.join(missing)}", where=where(path, line)
        )
    return {name: i for i, name in enumerate(names)}


def manifest_path(root: Path, name: str | os.PathLike) -> Path:
    """An annotation file named by the config: absolute as given, relative to ``root`` otherwise."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else root / path


def media_path(root: Path, relative: str, where_: str) -> Path:
    """``root / relative`` for a path named by the data: must stay inside ``root`` and be a media container."""
    rel = relative.strip().replace("\\", "/")
    if not rel:
        raise UserError("empty media path", where=where_)
    if os.path.isabs(rel) or re.match(r"^[A-Za-z]:", rel):
        raise UserError(f"absolute media path {relative!r} refused (paths resolve inside the root)", where=where_)
    norm = os.path.normpath(rel)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise UserError(f"media path {relative!r} escapes the root ('..' refused)", where=where_)
    media_suffix_check(norm, where_, relative)
    return root / norm


def media_suffix_check(path: str, where_: str, shown: str | None = None) -> None:
    """Only media containers (``MEDIA_SUFFIXES``) are opened: never playlists or concat lists naming other files."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MEDIA_SUFFIXES:
        raise UserError(
            f"{shown or path!r} is not a media file (suffix {suffix or 'none'!r}; playlists and references to other "
            f"files are not followed; accepted: {', '.join(sorted(MEDIA_SUFFIXES))})",
            where=where_,
        )


def format_template(template: str, fields: Mapping[str, Any], where_: str) -> str:
    """``template.format(**fields)`` with a clear error for an unknown field or a format that does not fit."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(
            f"file template {template!r} does not fit this row ({type(exc).__name__}: {exc}); "
            f"fields: {', '.join(f'{k}={v!r}' for k, v in fields.items())}",
            where=where_,
        ) from None


def header_and_rows(path: Path, empty: str = "empty file") -> tuple[int, list[str], Iterator[tuple[int, list[str]]]]:
    """(header line, header fields, the iterator of the remaining rows) of a CSV; no row at all is ``empty``."""
    rows = csv_rows(path)
    try:
        line, header = next(rows)
    except StopIteration:
        raise error(empty, path) from None
    return line, header, rows


def annotation_files(root: Path, annotations: Mapping[str, str] | None,
                     defaults: list[tuple[str, str]], what: str = "annotation CSV") -> list[tuple[str, Path]]:
    """(split, path) of each annotation file: ``annotations`` ({split: file}) if given, else those of the published
    ``defaults`` ([(split, file), ...]) that exist under ``root``; none at all is an error naming them."""
    if annotations is not None:
        return [(split_name(s, "data.annotations"), manifest_path(root, n)) for s, n in annotations.items()]
    files = [(split, root / name) for split, name in defaults if (root / name).is_file()]
    if not files:
        raise error(f"no {what} ({', '.join(name for _, name in defaults)}); set data.annotations", root)
    return files


def split_name(value: str, where_: str) -> str:
    """train / val / test from a dataset's split column (aliases as in ``manifest.SPLIT_ALIASES``)."""
    split = SPLIT_ALIASES.get(value.strip().lower())
    if split is None:
        raise UserError(f"unknown split {value!r} (expected train, val or test)", where=where_)
    return split


def parse_int(value: str, column: str, where_: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise UserError(f"{column}={value!r} is not an integer", where=where_) from None


def parse_float(value: str, column: str, where_: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise UserError(f"{column}={value!r} is not a number", where=where_) from None


_TIMESTAMP = re.compile(r"^(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)$")


def timestamp_seconds(value: str, column: str, where_: str) -> float:
    """``HH:MM:SS.ff`` (EPIC-KITCHENS) → seconds."""
    m = _TIMESTAMP.match(value.strip())
    if not m:
        raise UserError(f"{column}={value!r} is not a HH:MM:SS.ff timestamp", where=where_)
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def read_class_list(path: Path) -> list[str]:
    """A class-list file: one class name per line (blank lines ignored), in index order; duplicates are errors."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        name = text.strip()
        if not name:
            continue
        if name in seen:
            raise UserError(f"class {name!r} listed twice (first on line {seen[name]})", where=where(path, line))
        seen[name] = line
        names.append(name)
    if not names:
        raise UserError("empty class list", where=str(path))
    return names


class FileCheck:
    """Whether media files exist, each path stat'ed once (many EPIC segments share one video)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._seen: dict[Path, bool] = {}

    def __call__(self, path: Path) -> bool:
        if not self.enabled:
            return True
        if path not in self._seen:
            self._seen[path] = path.is_file()
        return self._seen[path]


def missing_row(path: Path, where_: str, split: str | None, label: str) -> ReportRow:
    return ReportRow("missing", "media file not found", where_, str(path), split, label)


def finish(
    clips: list[Clip], class_names: list[str], multilabel: bool, report: list[ReportRow], sources: list[Path],
    explicit_classes: bool = False,
) -> DatasetRecords:
    """The records, or a ``UserError`` when no clip remains (every file missing or every row left out)."""
    if not clips:
        counts = Counter(row.status for row in report)
        first = next((row for row in report if row.status == "missing"), None)
        hint = f" (first missing: {first.path}; check data.root and the file template)" if first else ""
        raise UserError(
            f"no clips remain ({counts.get('missing', 0)} missing, {counts.get('skipped', 0)} skipped){hint}",
            where=", ".join(str(p) for p in sources),
        )
    return DatasetRecords(clips, class_names, multilabel, report, sources, explicit_classes)
