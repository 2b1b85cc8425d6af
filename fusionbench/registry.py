"""The one door to the fusion models: ``@register_fusion`` on a model class, ``create_model(name, ...)`` to build one.

Presets name the backbone size (and the default input geometry); overrides are validated against the model's
constructor before anything is built, so a typo fails with the list of valid keys.
"""
from __future__ import annotations

import collections.abc
import difflib
import fnmatch
import importlib
import inspect
import types
import typing
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

_FUSIONS: dict[str, type[nn.Module]] = {}


@dataclass(frozen=True)
class Preset:
    """Backbone size and token geometry shared by every fusion at this preset."""

    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    audio_shape: tuple[int, int] = (32, 160)  # (n_mels, n_frames): the synthetic default, 2 s at 12.5 ms hop
    audio_patch: tuple[int, int] = (32, 10)  # one audio token per video frame (125 ms)
    video_shape: tuple[int, int, int] = (16, 32, 32)  # (T, H, W)
    video_patch: tuple[int, int, int] = (1, 32, 32)  # one video token per frame: 16 + 16 time-aligned tokens


PRESETS: dict[str, Preset] = {
    # CI: every fusion < 1 M parameters, forward+backward in milliseconds.
    "tiny": Preset(dim=32, depth=2, heads=2, mlp_ratio=2.0),
    # The default CPU benchmark (54 runs in minutes on 2 cores): ~60 ms per batch of 64 on one thread.
    "small": Preset(dim=64, depth=4, heads=4, mlp_ratio=2.0),
    # The papers' ViT-B/16 sizes; AST/CAV-MAE fbank (128 mel × 1024 frames), 8 frames of 224² (MBT paper inputs).
    "base": Preset(
        dim=768, depth=12, heads=12, mlp_ratio=4.0, drop_path=0.1,
        audio_shape=(128, 1024), audio_patch=(16, 16), video_shape=(8, 224, 224), video_patch=(1, 16, 16),
    ),
}


def register_fusion(name: str):
    """Class decorator: register a ``FusionModel`` subclass under ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _FUSIONS and _FUSIONS[name] is not cls:
            raise ValueError(f"fusion {name!r} is already registered by {_FUSIONS[name].__qualname__}")
        _FUSIONS[name] = cls
        cls.fusion_name = name
        return cls

    return wrap


def _load_builtin() -> None:
    importlib.import_module("fusionbench.fusions")


def list_fusions(pattern: str = "*") -> list[str]:
    """Registered fusion names (sorted), optionally filtered by a shell-style wildcard."""
    _load_builtin()
    return sorted(n for n in _FUSIONS if fnmatch.fnmatch(n, pattern))


def get_fusion(name: str) -> type[nn.Module]:
    _load_builtin()
    if name not in _FUSIONS:
        hint = difflib.get_close_matches(name, _FUSIONS, n=1)
        raise KeyError(
            f"unknown fusion {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; valid: {', '.join(sorted(_FUSIONS))}"
        )
    return _FUSIONS[name]


def model_kwargs(name: str) -> list[str]:
    """Keyword arguments a fusion accepts: its own keyword-only options, then those of the base classes it forwards
    ``**kwargs`` to (the preset fields of ``FusionModel``)."""
    keys: list[str] = []
    for cls in get_fusion(name).__mro__:
        if "__init__" not in vars(cls) or cls is nn.Module:
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        keys += [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in keys]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return keys


def model_option_types(name: str) -> dict[str, Any]:
    """The annotated type of each keyword option (``typing.get_type_hints`` along the MRO, as ``model_kwargs``)."""
    hints: dict[str, Any] = {}
    for cls in get_fusion(name).__mro__:
        if "__init__" not in vars(cls) or cls is nn.Module:
            continue
        for key, hint in typing.get_type_hints(cls.__init__).items():
            hints.setdefault(key, hint)
        params = inspect.signature(cls.__init__).parameters.values()
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return {k: hints.get(k, Any) for k in model_kwargs(name)}


def fits(value: Any, hint: Any) -> bool:
    """Whether a config value fits an annotation: int is not bool, float takes int, a tuple or a Sequence takes a
    list (configs give lists); an annotation this does not understand accepts anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    seq = isinstance(value, collections.abc.Sequence) and not isinstance(value, (str, bytes))  # list, ListConfig
    if origin is tuple:
        if not seq:
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(fits(x, args[0]) for x in value)
        return not args or (len(value) == len(args) and all(fits(x, a) for x, a in zip(value, args)))
    if origin in (list, collections.abc.Sequence):
        return seq and all(fits(x, args[0]) for x in value) if args else seq
    if isinstance(hint, type) and origin is None:
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    """``int``, ``int | None``, ``tuple[int, int]``: an annotation as a user reads it."""
    if hint is type(None) or hint is None:
        return "None"
    if isinstance(hint, type) and typing.get_origin(hint) is None:
        return hint.__name__
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(hint))
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def validate_overrides(name: str, overrides: dict) -> None:
    """Raise ``KeyError`` naming the valid keys if an override is not an argument of the fusion (or its preset), and
    ``TypeError`` (``"<key>=<value> is not <type>"``) if its value does not fit the constructor's annotation."""
    valid = model_kwargs(name)
    bad = [k for k in overrides if k not in valid]
    if bad:
        hints = {k: difflib.get_close_matches(k, valid, n=1) for k in bad}
        said = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise KeyError(f"fusion {name!r} has no option {said}; valid keys: {', '.join(valid)}")
    types_ = model_option_types(name)
    for key, value in overrides.items():
        if not fits(value, types_[key]):
            raise TypeError(f"{key}={value!r} is not {type_name(types_[key])} (fusion {name!r})")


def resolve_model_args(name: str, preset: str = "tiny", **overrides) -> dict:
    """Preset fields merged with overrides, validated, tuples restored (configs give lists)."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    validate_overrides(name, overrides)
    args = {**asdict(PRESETS[preset]), **overrides}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def create_model(name: str, num_classes: int, preset: str = "tiny", **overrides) -> nn.Module:
    """Build fusion ``name`` at ``preset`` size with ``overrides`` (validated against the constructor)."""
    return get_fusion(name)(num_classes, **resolve_model_args(name, preset, **overrides))
