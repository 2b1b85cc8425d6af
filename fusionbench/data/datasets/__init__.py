"""One reader per dataset behind one interface (``base.Reader``): ``read(root, **options) -> DatasetRecords``.

``READERS`` maps a dataset name (``data.dataset``) to its reader. ``records_for(data_cfg)`` is what the data layer
calls: it picks the reader, passes it ``data.root`` and ``data.options`` (checked against the reader's signature
first: a typo is a one-line ``ConfigError`` listing the valid options), plus the few arguments the config itself
supplies (``CONFIG_ARGS``: ``data.multilabel``, ``data.manifest``, the synthetic ``data.task`` and generator request),
then applies the integrity rules (``fusionbench.data.integrity``) and returns the records with every split assigned.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from fusionbench.data.datasets import audioset, clips, epic, kinetics, synth, vggsound
from fusionbench.data.datasets.base import DatasetRecords, Reader, ReportRow
from fusionbench.errors import UserError

READERS: dict[str, Reader] = {
    "synth": synth.read,
    "clips": clips.read,
    "vggsound": vggsound.read,
    "audioset": audioset.read,
    "kinetics": kinetics.read,
    "kinetics_sounds": kinetics.read_sounds,
    "epic_kitchens": epic.read,
}

# Reader parameters that come from the config's own keys, never from data.options.
CONFIG_ARGS: dict[str, tuple[str, Callable[[DictConfig], Any]]] = {
    "multilabel": ("data.multilabel", lambda d: bool(d.multilabel)),
    "manifest": ("data.manifest", lambda d: str(manifest_of(d)) if d.manifest else None),
    "task": ("data.task", lambda d: str(d.task)),
    "request": ("data.synth", synth.synth_request),
}
RUNTIME_ARGS = ("workers",)  # how, not what: passed by the caller (decode processes of a generator)

__all__ = ["READERS", "DatasetRecords", "Reader", "ReportRow", "read_dataset", "records_for", "reader_options"]


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


def reader_options(name: str) -> list[str]:
    """The options ``data.options`` may set for dataset ``name`` (its reader's parameters, less the config's own)."""
    return [p for p in _options(READERS[name]) if p not in CONFIG_ARGS and p not in RUNTIME_ARGS]


def check_options(data_cfg: DictConfig) -> None:
    """``data.dataset`` names a reader and ``data.options`` only its options; ``ConfigError`` otherwise (before any
    run: ``config.validate`` calls this)."""
    from fusionbench.config import ConfigError

    name = data_cfg.dataset
    if name not in READERS:
        raise ConfigError(f"data.dataset={name!r} is not one of {', '.join(READERS)}", key="data.dataset")
    options = _container(data_cfg.options)
    valid = reader_options(name)
    for key in options:
        if key in CONFIG_ARGS and key in _options(READERS[name]):
            raise ConfigError(f"data.options.{key}: set {CONFIG_ARGS[key][0]} instead", key=f"data.options.{key}")
        if key not in valid:
            raise ConfigError(f"data.options.{key} is not an option of the {name} reader; valid: "
                              f"{', '.join(valid) or '(none)'}", key=f"data.options.{key}")
    if data_cfg.manifest and "manifest" not in _options(READERS[name]):
        raise ConfigError(f"data.manifest does not apply to {name} (its annotation files are data.options: "
                          f"{', '.join(valid)})", key="data.manifest")


def _container(value: Any) -> dict[str, Any]:
    out = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else dict(value or {})
    return dict(out)


def manifest_of(data_cfg: DictConfig) -> Path | None:
    """``data.manifest`` as a path (relative to the project root), or None."""
    from fusionbench.config import project_path

    return project_path(str(data_cfg.manifest)) if data_cfg.manifest else None


def records_for(data_cfg: DictConfig, *, workers: int = 1) -> DatasetRecords:
    """The dataset ``data_cfg`` names, read by its reader and passed through every integrity rule, splits assigned.

    ``workers``: processes a reader may use to generate its data (the synthetic sets).
    """
    from fusionbench.config import data_root
    from fusionbench.data import integrity

    check_options(data_cfg)
    name = str(data_cfg.dataset)
    reader = READERS[name]
    params = _options(reader)
    kwargs = {key: get(data_cfg) for key, (_, get) in CONFIG_ARGS.items() if key in params}
    kwargs = {key: value for key, value in kwargs.items() if value not in (None, "")}  # unset: the reader's default
    kwargs.update(_container(data_cfg.options))
    if "workers" in params:
        kwargs["workers"] = int(workers)
    records = reader(data_root(data_cfg), **kwargs)
    return integrity.apply(records, float(data_cfg.val_frac), float(data_cfg.test_frac))
