"""One reader per dataset behind one interface (``base.Reader``): ``read(root, **options) -> DatasetRecords``.

``READERS`` maps a dataset name to its reader; ``read_dataset`` checks the option names first, so a typo in a
config key is a one-line error listing the valid ones rather than a ``TypeError``.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fusionbench.data.datasets import audioset, epic, kinetics, vggsound
from fusionbench.data.datasets.base import DatasetRecords, Reader, ReportRow
from fusionbench.errors import UserError

READERS: dict[str, Reader] = {
    "vggsound": vggsound.read,
    "audioset": audioset.read,
    "kinetics": kinetics.read,
    "kinetics_sounds": kinetics.read_sounds,
    "epic_kitchens": epic.read,
}

__all__ = ["READERS", "DatasetRecords", "Reader", "ReportRow", "read_dataset"]


def read_dataset(name: str, root: str | Path, **options: Any) -> DatasetRecords:
    """``READERS[name](Path(root), **options)``, with unknown datasets and option names as ``UserError``."""
    if name not in READERS:
        raise UserError(f"unknown dataset {name!r} (known: {', '.join(sorted(READERS))})", where="data.dataset")
    reader = READERS[name]
    params = _options(reader)
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise UserError(
            f"option(s) {', '.join(unknown)} not known to the {name} reader (valid: {', '.join(params)})",
            where="data",
        )
    return reader(Path(root), **options)


def _options(reader: Reader) -> list[str]:
    return [p.name for p in inspect.signature(reader).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("root", "subset")]
