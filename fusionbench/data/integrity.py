"""Integrity rules every dataset passes through (``datasets.records_for`` applies them): pure functions over clips.

- **Splits per source video.** A clip without a split gets one from a hash of its group (``extras["group"]``: the
  source video), never of its file, so every window and every segment of one video lands in one split. A dataset
  that gives splits but lacks a val (or test) split gets it carved from its train split the same way, per group, and
  reported (fusionbench's rule: VGGSound and AudioSet publish no val split).
- **No duplicates across splits.** The same file and window twice: in two splits, or with two labels → ``UserError``
  naming both lines; an exact repeat is dropped and reported (``skipped``).
- **Every evaluated class is trained.** A class in val/test that no train clip has → ``UserError``; with an explicit
  class list (``explicit_classes``) a reported ``warning`` instead.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from fusionbench.data.manifest import Clip
from fusionbench.errors import UserError

if TYPE_CHECKING:  # fusionbench.data.datasets imports this module (the clips reader's file_group)
    from fusionbench.data.datasets.base import DatasetRecords, ReportRow

SPLITS = ("train", "val", "test")
_YTID_FILE = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_\d{6}")  # {ytid}_{start:06d}... (VGGSound, Kinetics)


def file_group(path: Path, root: Path | None = None, label: str = "") -> str:
    """The source video of a file named by a user's manifest (the clips.csv rule; fusionbench's own).

    The YouTube id of a ``{ytid}_{start:06d}...`` name; else the parent folder (``<video>/segK.mp4``), except when
    that folder is ``root`` itself or is named like the clip's label (a by-class layout ``dog/x.mp4``), where each file
    is its own video (its path without the suffix).
    """
    m = _YTID_FILE.match(path.name)
    if m:
        return m["ytid"]
    parent = path.parent
    try:
        rel = path.relative_to(root) if root is not None else path
    except ValueError:
        rel = path
    if (root is not None and parent == root) or (label and parent.name == label) or rel.parent == Path("."):
        return str(rel.with_suffix(""))
    return str(rel.parent)


def group_hash(group: str) -> float:
    """A group's place in [0, 1): the first 8 bytes of sha256(group) (stable across runs, orders and machines)."""
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2**64


def _group(clip: Clip) -> str:
    return str(clip.extras.get("group") or clip.path)


def assign_splits(clips: Sequence[Clip], val_frac: float, test_frac: float) -> list[Clip]:
    """Clips without a split get ``test`` / ``val`` / ``train`` by the hash of their group (``group_hash``)."""
    out = []
    for clip in clips:
        if clip.split is None:
            u = group_hash(_group(clip))
            clip = replace(clip, split="test" if u < test_frac else "val" if u < test_frac + val_frac else "train")
        out.append(clip)
    return out


def carve_missing_splits(
    clips: Sequence[Clip], val_frac: float, test_frac: float
) -> tuple[list[Clip], list[ReportRow]]:
    """A split the dataset does not have (VGGSound: no val) is carved from its train clips, per group by hash, with
    the same fractions as ``assign_splits``; one reported ``warning`` per carved split. Nothing when every clip's
    split was given and all three exist, or when none was given (``assign_splits`` does it all)."""
    from fusionbench.data.datasets.base import ReportRow

    present = {c.split for c in clips}
    if None in present or not present:
        return list(clips), []
    wanted = {"test": test_frac, "val": val_frac}
    missing = [s for s in ("test", "val") if s not in present and wanted[s] > 0]
    if not missing or "train" not in present:
        return list(clips), []
    out, moved = [], defaultdict(int)
    for clip in clips:
        if clip.split == "train":
            u = group_hash(_group(clip))
            cut = 0.0
            for split in ("test", "val"):
                lo, cut = cut, cut + wanted[split]
                if split in missing and lo <= u < cut:
                    clip = replace(clip, split=split)
                    moved[split] += 1
        out.append(clip)
    report = [ReportRow("warning", f"the dataset has no {s} split: {moved[s]} train clips moved to {s} (by source "
                                   f"video, data.{s}_frac={wanted[s]:g})", split=s) for s in missing]
    return out, report


def _where(clip: Clip, fallback: str) -> str:
    line = clip.extras.get("line")
    source = clip.extras.get("source") or fallback
    return f"{source}, line {line}" if line is not None else str(source)


def drop_duplicates(clips: Sequence[Clip], source: str = "") -> tuple[list[Clip], list[ReportRow]]:
    """The same file and window (path, start_s, end_s) more than once: an exact repeat (same labels, same split) is
    dropped and reported as ``skipped``; in two splits or with two labels → ``UserError`` naming both lines."""
    from fusionbench.data.datasets.base import ReportRow

    first: dict[tuple, Clip] = {}
    out, report = [], []
    for clip in clips:
        key = (str(clip.path), float(clip.start_s), clip.end_s)
        seen = first.get(key)
        if seen is None:
            first[key] = clip
            out.append(clip)
            continue
        both = f"{_where(seen, source)} and {_where(clip, source)}"
        if seen.split != clip.split:
            end = "end" if clip.end_s is None else f"{clip.end_s:g}"
            raise UserError(f"{clip.path.name} (window {clip.start_s:g}-{end}) is in two splits ({seen.split} and "
                            f"{clip.split}): {both}", where=_where(clip, source))
        if seen.labels != clip.labels:
            raise UserError(f"{clip.path.name} is listed twice with different labels ({list(seen.labels)} and "
                            f"{list(clip.labels)}): {both}", where=_where(clip, source))
        report.append(ReportRow("skipped", f"exact duplicate of {_where(seen, source)} (dropped)",
                                _where(clip, source), str(clip.path), clip.split))
    return out, report


def check_classes(clips: Iterable[Clip], class_names: Sequence[str], explicit: bool) -> list[ReportRow]:
    """A class some val/test clip has and no train clip has: ``UserError`` (the model could never predict it), or a
    reported ``warning`` per class when the class list is explicit (a class file fixes the classes)."""
    from fusionbench.data.datasets.base import ReportRow

    clips = list(clips)
    trained = {i for c in clips if c.split == "train" for i in c.labels}
    untrained: dict[int, tuple[str, Clip]] = {}
    for clip in clips:
        if clip.split in ("val", "test"):
            for i in clip.labels:
                if i not in trained and i not in untrained:
                    untrained[i] = (clip.split, clip)
    if not untrained:
        return []
    name = lambda i: class_names[i] if 0 <= i < len(class_names) else str(i)  # noqa: E731
    if not explicit:
        i, (split, clip) = next(iter(untrained.items()))
        listed = ", ".join(repr(name(j)) for j in list(untrained)[:5])
        more = ", ..." if len(untrained) > 5 else ""
        raise UserError(f"{len(untrained)} class(es) in val/test have no training clip ({listed}{more}); "
                        f"first: {clip.path.name} in {split}. Fix the splits, or pass a class list "
                        "(data.options.class_list) to accept it with a warning", where=_where(clip, ""))
    return [ReportRow("warning", f"class {name(i)!r} has no training clip (in {split})", _where(clip, ""),
                      str(clip.path), split, name(i)) for i, (split, clip) in untrained.items()]


def apply(records: DatasetRecords, val_frac: float, test_frac: float) -> DatasetRecords:
    """Every rule above, in order: duplicates, carved splits (not for a reader whose splits are final), automatic
    splits, the class check."""
    source = ", ".join(str(p) for p in records.sources[:1])
    clips, dropped = drop_duplicates(records.clips, source)
    clips, carved = carve_missing_splits(clips, val_frac, test_frac) if not records.fixed_splits else (clips, [])
    clips = assign_splits(clips, val_frac, test_frac)
    warnings = check_classes(clips, records.class_names, records.explicit_classes)
    return replace(records, clips=clips, report=[*records.report, *dropped, *carved, *warnings])
