"""Typed configuration: schema, YAML + dotlist merge, validation before any run, and the config hash.

A run's config is ``experiments/defaults.yaml`` (optionally an experiment YAML on top) merged with command-line
``key=value`` overrides. Every key is checked against the schema below; a typo fails at once with the valid keys.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fusionbench.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = PROJECT_ROOT / "experiments"


class ConfigError(UserError, ValueError):
    """A config that cannot run: unknown key, bad value, missing file."""


@dataclass
class AudioConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 32  # AST/CAV-MAE use 128; the synthetic default uses 32
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 12.5  # AST: 10 ms; 12.5 ms puts 10 fbank frames in each 125 ms video frame
    target_length: int = 160  # fbank frames after pad/crop (AST: 1024)
    norm_mean: float = 0.0  # fbank normalisation: (x - mean) / (norm_std_scale * std)
    norm_std: float = 1.0
    norm_std_scale: float = 1.0  # AST uses 2 (normalise to std 0.5); CAV-MAE 1
    freqm: int = 0  # SpecAugment: max frequency-mask width (train only; 0 = off)
    timem: int = 0  # SpecAugment: max time-mask width (train only; 0 = off)


@dataclass
class VideoConfig:
    num_frames: int = 16  # T, sampled uniformly over the clip
    size: int = 32  # frames resized to size × size
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])


@dataclass
class SynthConfig:
    """Parameters of the embedded procedural dataset (``fusionbench data synth``)."""

    num_clips: int = 3000
    seed: int = 0
    video_noise: float | None = None  # pixel noise σ (pixels in [0, 1]); None: the task's own (synthetic.TASKS)
    audio_snr_db: float | None = None  # white-noise SNR of the audio track; None: the task's own
    drop_p: float = 0.0  # probability that one modality of a clip is replaced by pure noise
    val_frac: float = 0.15
    test_frac: float = 0.15


@dataclass
class DataConfig:
    dataset: str = "synth"  # synth | clips (a generic clips.csv)
    task: str = "joint"  # synth: joint | modsum | sync
    root: str = "data/synth"  # synth: clips go to <root>/<task>; clips: folder that paths are relative to
    manifest: str = ""  # clips.csv path; default <root>/<task>/clips.csv (synth) or <root>/clips.csv
    clip_seconds: float = 2.0
    multilabel: bool = False
    on_error: str = "raise"  # raise | skip: what a corrupt/missing clip does
    # train: normalise audio and video by the training split's own statistics (AST's dataset-statistics recipe);
    # config: by audio.norm_mean / norm_std and video.mean / std as given (a pretrained backbone's statistics)
    norm_stats: str = "train"
    cache_dir: str = "data/cache"  # decoded-tensor cache; "" disables it
    batch_size: int = 64
    num_workers: int = 0
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class TrainConfig:
    max_epochs: int = 10
    max_steps: int = -1
    lr: float = 1e-3  # the peak learning rate, used as given unless blr is set
    # the papers' rule (MAE, DeepAVFusion): lr = blr × effective batch / 256, effective batch = data.batch_size ×
    # devices × accumulate; 0 = off (use lr as given)
    blr: float = 0.0
    accumulate: int = 1  # gradient accumulation: optimiser steps every `accumulate` batches
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_frac: float = 0.1  # linear warm-up over this fraction of the steps, then cosine decay to 0
    label_smoothing: float = 0.0
    grad_clip: float = 1.0
    precision: str = "32-true"  # "bf16-mixed" on CUDA
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"  # "ddp" for multi-GPU
    threads: int = 2  # torch intra-op threads on CPU
    deterministic: bool = True
    progress: bool = True
    val_every_n_epochs: int = 1
    # stop once val/loss falls below this (0 = off): a solved run stops instead of spending the rest of its epochs
    # (fusionbench's compute rule, Lightning's EarlyStopping stopping_threshold; patience never stops a run)
    stop_val_loss: float = 0.0


@dataclass
class EvalConfig:
    conditions: list[str] = field(default_factory=lambda: ["av", "audio_only", "video_only"])
    top_k: int = 5


@dataclass
class TrackingConfig:
    store: str = "results/mlflow.db"  # sqlite file (relative paths are under the project root)
    experiment: str = "fusionbench"


@dataclass
class Config:
    fusion: str = "late"
    preset: str = "small"
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)  # fusion options, validated against the fusion's constructor
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Keys that do not change what a run computes: left out of the config hash (run identity adds fusion, data and seed).
NON_SEMANTIC = ("seed", "tracking", "train.progress", "data.num_workers", "data.cache_dir", "data.on_error")


def _check_keys(given: Any, schema: type, where: str = "") -> None:
    """Walk a plain dict against the dataclass schema; raise ConfigError naming the valid keys on the first typo."""
    if not isinstance(given, dict):
        return
    valid = {f.name: f for f in fields(schema)}
    for key, value in given.items():
        path = f"{where}{key}"
        if key not in valid:
            hint = difflib.get_close_matches(str(key), valid, n=1)
            raise ConfigError(
                f"unknown config key {path!r}{f' (did you mean {where}{hint[0]!r}?)' if hint else ''}; "
                f"valid keys{f' under {where[:-1]!r}' if where else ''}: {', '.join(valid)}"
            )
        default = valid[key].default_factory() if callable(valid[key].default_factory) else None
        if is_dataclass(default):
            _check_keys(value, type(default), f"{path}.")


def _load_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return loaded or {}


def parse_dotlist(overrides: list[str]) -> dict:
    """``["a.b=1", "fusion=mbt"]`` → nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)), resolve=False)


def load_config(overrides: list[str] | None = None, experiment: str | Path | None = None) -> DictConfig:
    """defaults.yaml ← experiment YAML ← overrides, validated against the schema and the fusion's options."""
    layers = [_load_yaml(EXPERIMENTS / "defaults.yaml")]
    if experiment:
        path = Path(experiment)
        if not path.exists() and (EXPERIMENTS / path).exists():
            path = EXPERIMENTS / path
        layer = _load_yaml(path)
        layer.pop("sweep", None)  # a sweep file's grid is read by `fusionbench sweep`, not part of a run's config
        layers.append(layer)
    layers.append(parse_dotlist(overrides or []))
    for layer in layers:
        _check_keys(layer, Config)
    schema = OmegaConf.structured(Config)
    try:
        cfg = OmegaConf.merge(schema, *layers)
    except Exception as exc:  # type errors: "lr=abc" and the like
        raise ConfigError(f"invalid config value: {exc}") from None
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Checks that need more than the schema: the fusion, its options, the preset, choices."""
    from fusionbench.registry import PRESETS, list_fusions, validate_overrides

    if cfg.fusion not in list_fusions():
        raise ConfigError(f"unknown fusion {cfg.fusion!r}; valid: {', '.join(list_fusions())}")
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; valid: {', '.join(PRESETS)}")
    try:
        validate_overrides(cfg.fusion, dict(cfg.model))
    except KeyError as exc:
        raise ConfigError(f"model.{exc.args[0]}") from None
    choices = {"data.dataset": ("synth", "clips"), "data.task": ("joint", "modsum", "sync"), "data.on_error": ("raise", "skip"),
               "data.norm_stats": ("train", "config")}
    for key, valid in choices.items():
        value = OmegaConf.select(cfg, key)
        if key == "data.task" and cfg.data.dataset != "synth":
            continue
        if value not in valid:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(valid)}")
    if cfg.train.stop_val_loss < 0:
        raise ConfigError(f"train.stop_val_loss={cfg.train.stop_val_loss} must be >= 0 (0 = off)")
    from fusionbench.evaluate.conditions import parse_condition

    for name in cfg.eval.conditions:
        parse_condition(name)  # raises ConfigError on an unknown condition


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict → {"a.b.c": value}; lists kept as values."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that changes what a run computes (not the seed, the store, or worker counts)."""
    flat = flatten(to_dict(cfg))
    kept = {k: v for k, v in flat.items() if not any(k == n or k.startswith(f"{n}.") for n in NON_SEMANTIC)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_name(cfg: DictConfig) -> str:
    """The dataset as leaderboards name it: ``synth-joint``, or the manifest's folder name for ``clips``."""
    if cfg.data.dataset == "synth":
        return f"synth-{cfg.data.task}"
    return Path(cfg.data.manifest or cfg.data.root).resolve().stem if cfg.data.manifest else Path(cfg.data.root).name


def project_path(path: str | Path) -> Path:
    """Relative paths in configs are relative to the project root."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path
