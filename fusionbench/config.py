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

from omegaconf import DictConfig, ListConfig, OmegaConf

from fusionbench.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = PROJECT_ROOT / "experiments"


class ConfigError(UserError, ValueError):
    """A config that cannot run: unknown key, bad value, missing file. ``key`` (when known) is the dotted config key
    at fault; ``load_config`` then names the layer that set it (the experiment YAML or "command line") as ``where``."""

    def __init__(self, reason: str, where: str | None = None, key: str | None = None) -> None:
        super().__init__(reason, where)
        self.key = key


COMMAND_LINE = "command line"
# Lightning's accelerator names and precision inputs (Trainer(accelerator=..., precision=...)); test_config checks
# them against lightning.fabric's own Literal types, so a Lightning upgrade that changes them fails a test.
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16")


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
    # with probability drop_p a clip of drop_splits loses one modality (audio or video, 50/50): drop_mode absent = the
    # mp4 has no stream for it (the reader reports it missing; data.missing_modality decides), noise = the stream is
    # pure noise (destroyed: nothing says so). Train only by default, so the test split stays clean
    drop_p: float = 0.0
    drop_mode: str = "absent"
    drop_splits: list[str] = field(default_factory=lambda: ["train"])
    val_frac: float = 0.15  # the generator's exact split fractions (written in its clips.csv split column)
    test_frac: float = 0.15


@dataclass
class DataConfig:
    # a reader of fusionbench.data.datasets.READERS: synth | clips | vggsound | audioset | kinetics | kinetics_sounds |
    # epic_kitchens (experiments/data/<name>.yaml; `data=<name>` on the command line loads one)
    dataset: str = "synth"
    task: str = "joint"  # synth: joint | modsum | sync
    root: str = "data/synth"  # the dataset's folder (synth: sets go to <root>/<task>); paths resolve inside it
    manifest: str = ""  # synth / clips: a CSV to read instead (default <root>/<task>/clips.csv or <root>/clips.csv)
    options: dict[str, Any] = field(default_factory=dict)  # the reader's options (its signature), e.g. class_list
    # automatic splits of clips without one, per source video (fusionbench.data.integrity); a dataset without a val
    # (or test) split has it carved from its train split with the same fraction
    val_frac: float = 0.15
    test_frac: float = 0.15
    clip_seconds: float = 2.0
    # windows of clip_seconds decoded per training clip, evenly spread over the clip (data/windows.py); each epoch
    # draws one per clip at random. 1 = the centred window
    train_windows: int = 1
    multilabel: bool = False
    on_error: str = "raise"  # raise | skip: what a corrupt/missing clip does
    # a clip without an audio (or video) stream: absent = kept, the modality marked absent in the batch
    # (audio_present / video_present) and the fusion's unimodal path used for it; skip = left out, counted in the
    # data report; error = the run stops naming the file
    missing_modality: str = "absent"
    # train: normalise audio and video by the training split's own statistics (AST's dataset-statistics recipe);
    # config: by audio.norm_mean / norm_std and video.mean / std as given (a pretrained backbone's statistics)
    norm_stats: str = "train"
    # with norm_stats=train: channel = one mean and std for the fbank and per RGB channel for video; feature = each
    # fbank bin × frame and each pixel × channel by its own (removes what every clip shares; the sync recipe)
    norm_by: str = "channel"
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
    # devices × num_nodes × accumulate; 0 = off (use lr as given)
    blr: float = 0.0
    accumulate: int = 1  # gradient accumulation: optimiser steps every `accumulate` batches
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_frac: float = 0.1  # linear warm-up over this fraction of the steps, then cosine decay to 0
    lr_schedule: str = "cosine"  # after the warm-up: cosine (decay to 0 at the last step) | constant (the peak lr)
    label_smoothing: float = 0.0
    grad_clip: float = 1.0
    precision: str = "32-true"  # "bf16-mixed" on CUDA
    compile: bool = False  # torch.compile the fusion's forward (inductor; not part of the run identity)
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1  # machines (Lightning's Trainer(num_nodes)): world size = devices × num_nodes
    strategy: str = "auto"  # "ddp" for multi-GPU
    threads: int = 2  # torch intra-op threads on CPU
    deterministic: bool = True
    progress: bool = True
    val_every_n_epochs: int = 1
    # stop once val/loss falls below this (0 = off): a solved run stops instead of spending the rest of its epochs
    # (fusionbench's compute rule, Lightning's EarlyStopping stopping_threshold; patience never stops a run)
    stop_val_loss: float = 0.0
    # checkpoints every N epochs (0 = none: a killed run starts over); a killed run of the same config resumes from
    # its last one (fusionbench.tasks.checkpoints); "" = <tracking store dir>/checkpoints
    checkpoint_every: int = 1
    checkpoint_dir: str = ""
    protocol: str = "finetune"  # finetune | linear_probe (frozen encoder, BatchNorm + linear head: tasks/probe.py)
    # each training clip with both modalities drops one (audio or video, 50/50) with this probability, marked absent
    # so the fusion's own unimodal path runs (tasks/modality_dropout.py); 0 = off; validation and test untouched
    modality_dropout: float = 0.0
    # modality balancing: none | ogm | ogm_ge (Peng et al. CVPR 2022, tasks/ogm_ge.py); ogm_alpha is the paper's α,
    # ogm_until the fraction of the optimiser steps it modulates (the README's epochs 0-50 of 100)
    balance: str = "none"
    ogm_alpha: float = 0.1
    ogm_until: float = 0.5


@dataclass
class EvalConfig:
    conditions: list[str] = field(default_factory=lambda: ["av", "audio_only", "video_only"])
    # multi-clip evaluation: windows per test clip, evenly spread; a clip's logits are their mean (1 = centred)
    test_windows: int = 1
    top_k: int = 5


@dataclass
class TrackingConfig:
    # a sqlite file (relative paths are under the project root) or an MLflow server URI http(s)://host:port
    store: str = "results/mlflow.db"
    experiment: str = "fusionbench"
    # identity locks and checkpoints: "" = the sqlite file's folder, or results/tracking/<host>_<port> for a server
    state_dir: str = ""


@dataclass
class InitConfig:
    """Pretrained weights from local files (nothing is downloaded): "" = random initialisation."""

    model: str = ""  # a whole fusionbench checkpoint
    audio: str = ""  # an audio ViT (AST / AudioMAE layouts, or an image ViT: RGB patch weights summed)
    video: str = ""  # an image ViT (timm ViT / DeiT state dict, MAE checkpoint)
    inflate: str = "central"  # 2-D patch kernel → tubelet: central (ViViT) | average (I3D); fusionbench/nn/pretrained.py


@dataclass
class PretrainConfig:
    """Self-supervised pretraining (``fusionbench pretrain``; labels are ignored). Defaults are stated choices:
    τ = 0.05 is CAV-MAE's (Zorro's is unverified); the mask ratios are DeepAVFusion's (video 0.75, audio 0.8); the
    decoder is narrower and shallower than DeepAVFusion's (512 wide, 8 blocks, 16 heads) so small presets stay fast."""

    objective: str = "none"  # contrastive | mae ("none": a supervised run)
    temperature: float = 0.05  # InfoNCE τ
    proj_dim: int = 128  # width of the L2-normalised projection heads
    fusion_weight: float = 1.0  # weight of NCE(f, proj([a; v])) where the fusion has a fused readout
    mask_ratio_video: float = 0.75
    mask_ratio_audio: float = 0.8
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True  # MAE: targets normalised per patch (mean/var, eps 1e-6)


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
    init: InitConfig = field(default_factory=InitConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# Keys that do not change what a run computes: left out of the config hash (run identity adds fusion, data and seed).
SYNTH_TASKS = ("joint", "modsum", "sync", "paired")  # the embedded tasks (synthetic.TASKS; no numpy / av import here)

NON_SEMANTIC = ("seed", "tracking", "train.progress", "data.num_workers", "data.cache_dir", "data.on_error",
                "train.checkpoint_every", "train.checkpoint_dir", "train.compile")
# Keys added after runs were recorded, left out of the config hash while they hold this value (the value that
# computes what runs did before the key existed), so adding them does not change any earlier run's identity.
HASHED_UNLESS_DEFAULT = {
    "train.modality_dropout": 0.0, "train.balance": "none", "train.ogm_alpha": 0.1, "train.ogm_until": 0.5,
    "data.synth.drop_mode": "absent", "data.synth.drop_splits": ["train"],
    "train.num_nodes": 1, "data.norm_by": "channel", "train.lr_schedule": "cosine",
}


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
                f"unknown config key {path!r}{f' (did you mean {where + hint[0]!r}?)' if hint else ''}; "
                f"valid keys{f' under {where[:-1]!r}' if where else ''}: {', '.join(valid)}"
            )
        default = valid[key].default_factory() if callable(valid[key].default_factory) else None
        if is_dataclass(default):
            _check_keys(value, type(default), f"{path}.")


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError("experiment file not found" if not path.exists() else "not a file", where=str(path))
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # YAML syntax errors and the like
        raise ConfigError(f"cannot read YAML: {' '.join(str(exc).split())}", where=str(path)) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"expected a mapping of config keys, got {type(loaded).__name__}", where=str(path))
    return loaded or {}


def parse_dotlist(overrides: list[str]) -> dict:
    """``["a.b=1", "fusion=mbt"]`` → nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value", where=COMMAND_LINE)
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)), resolve=False)
    except Exception as exc:
        raise ConfigError(f"cannot parse overrides: {' '.join(str(exc).split())}", where=COMMAND_LINE) from None


def refuse_interpolations(layer: Any, where: str | None = None, prefix: str = "") -> None:
    """Raise ConfigError for any string value containing ``${``: OmegaConf interpolations and resolvers
    (``${oc.env:HOME}``, ``${data.root}``) are refused in every config layer (fusionbench's rule: a config holds
    literal values, so what a run logs is what was written, and no environment value ever lands in MLflow params)."""
    if isinstance(layer, dict):
        for key, value in layer.items():
            refuse_interpolations(value, where, f"{prefix}{key}.")
    elif isinstance(layer, list):
        for i, value in enumerate(layer):
            refuse_interpolations(value, where, f"{prefix[:-1]}[{i}].")
    elif isinstance(layer, str) and "${" in layer:
        key = prefix[:-1]
        raise ConfigError(f"{key}={layer!r}: interpolations and resolvers (${{...}}) are not allowed in configs; "
                          "write the value itself", where=where, key=key)


def _sets(layer: dict, key: str) -> bool:
    """Whether a nested dict sets the dotted ``key`` (or a mapping above it)."""
    node: Any = layer
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


DATA_CONFIGS = EXPERIMENTS / "data"


def data_layer(name: str) -> tuple[str, dict]:
    """``data=<name>``: experiments/data/<name>.yaml (its ``data:`` mapping) as a config layer; unknown →
    ConfigError listing the available names."""
    path = DATA_CONFIGS / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        known = sorted(p.stem for p in DATA_CONFIGS.glob("*.yaml"))
        raise ConfigError(f"data={name!r}: no experiments/data/{name}.yaml; available: {', '.join(known)}",
                          where=COMMAND_LINE, key="data")
    layer = _load_yaml(path)
    if set(layer) != {"data"}:
        raise ConfigError("a data config holds one mapping, data:", where=str(path))
    return str(path), layer


def _split_data_shorthand(overrides: list[str]) -> tuple[list[tuple[str, dict]], list[str]]:
    """The ``data=<name>`` items (key exactly ``data``) as layers, and the other overrides."""
    layers, rest = [], []
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "data" and "=" in item:
            layers.append(data_layer(value.strip()))
        else:
            rest.append(item)
    return layers, rest


def load_config(overrides: list[str] | None = None, experiment: str | Path | None = None) -> DictConfig:
    """defaults.yaml ← experiment YAML ← ``data=<name>`` (experiments/data/<name>.yaml) ← overrides, validated
    against the schema and the fusion's options."""
    data_layers, overrides = _split_data_shorthand(list(overrides or []))
    defaults = EXPERIMENTS / "defaults.yaml"
    named = [(str(defaults), _load_yaml(defaults))]
    if experiment:
        path = Path(experiment)
        if not path.exists() and (EXPERIMENTS / path).exists():
            path = EXPERIMENTS / path
        layer = _load_yaml(path)
        layer.pop("sweep", None)  # a sweep file's grid is read by `fusionbench sweep`, not part of a run's config
        named.append((str(path), layer))
    named += data_layers
    named.append((COMMAND_LINE, parse_dotlist(overrides or [])))

    def origin(key: str | None) -> str:
        """The layer that set ``key`` last (the one a user would edit); the last layer when unknown."""
        if key:
            for where, layer in reversed(named):
                if _sets(layer, key):
                    return where
        return named[-1][0] if overrides or len(named) == 1 else named[-2][0]

    for where, layer in named:
        try:
            refuse_interpolations(layer, where)
            _check_keys(layer, Config)
        except ConfigError as exc:
            raise ConfigError(exc.reason, where=exc.where or where, key=exc.key) from None
    schema = OmegaConf.structured(Config)
    try:
        cfg = OmegaConf.merge(schema, *(layer for _, layer in named))
    except Exception as exc:  # type errors: "lr=abc" and the like
        key = getattr(exc, "full_key", None)
        text = " ".join(str(exc).split("\n")[0].split())
        raise ConfigError(f"invalid config value{f' for {key}' if key else ''}: {text}", where=origin(key),
                          key=key) from None
    try:
        validate(cfg)
    except ConfigError as exc:
        if exc.where:
            raise
        raise ConfigError(exc.reason, where=origin(exc.key), key=exc.key) from None
    return cfg


def _value_rules(cfg: DictConfig) -> list[tuple[str, bool, str]]:
    """(key, holds, the rule) for every value check; a key whose rule does not hold fails validation."""
    d, t, a, v, s = cfg.data, cfg.train, cfg.data.audio, cfg.data.video, cfg.data.synth
    pos_init_std = OmegaConf.select(cfg, "model.pos_init_std")
    rules = [
        ("model.pos_init_std", pos_init_std is None or pos_init_std > 0, "must be > 0"),
        ("data.norm_by", d.norm_by != "feature" or d.norm_stats == "train",
         "=feature fits the training split's statistics: it needs data.norm_stats=train"),
        ("data.batch_size", d.batch_size > 0, "must be > 0"),
        ("data.clip_seconds", d.clip_seconds > 0, "must be > 0"),
        ("data.train_windows", d.train_windows >= 1, "must be >= 1"),
        ("eval.test_windows", cfg.eval.test_windows >= 1, "must be >= 1"),
        ("data.num_workers", d.num_workers >= 0, "must be >= 0"),
        ("data.audio.sample_rate", a.sample_rate > 0, "must be > 0"),
        ("data.audio.num_mel_bins", a.num_mel_bins > 0, "must be > 0"),
        ("data.audio.frame_length_ms", a.frame_length_ms > 0, "must be > 0"),
        ("data.audio.frame_shift_ms", a.frame_shift_ms > 0, "must be > 0"),
        ("data.audio.target_length", a.target_length > 0, "must be > 0"),
        ("data.audio.norm_std", a.norm_std > 0, "must be > 0"),
        ("data.audio.norm_std_scale", a.norm_std_scale > 0, "must be > 0"),
        ("data.audio.freqm", a.freqm >= 0, "must be >= 0 (0 = off)"),
        ("data.audio.timem", a.timem >= 0, "must be >= 0 (0 = off)"),
        ("data.video.num_frames", v.num_frames > 0, "must be > 0"),
        ("data.video.size", v.size > 0, "must be > 0"),
        ("data.video.mean", len(v.mean) == 3, "must have 3 values (R, G, B)"),
        ("data.video.std", len(v.std) == 3 and all(x > 0 for x in v.std), "must have 3 values (R, G, B), each > 0"),
        ("data.synth.num_clips", s.num_clips > 0, "must be > 0"),
        ("data.synth.video_noise", s.video_noise is None or s.video_noise >= 0, "must be >= 0 (or null: the task's)"),
        ("data.synth.drop_p", 0 <= s.drop_p <= 1, "must be in [0, 1]"),
        ("data.synth.drop_splits", len(s.drop_splits) > 0 and set(s.drop_splits) <= {"train", "val", "test"},
         "must name one or more of train, val, test"),
        ("data.synth.val_frac", 0 <= s.val_frac < 1, "must be in [0, 1)"),
        ("data.synth.test_frac", 0 <= s.test_frac < 1, "must be in [0, 1)"),
        ("data.synth.test_frac", s.val_frac + s.test_frac < 1,
         f"+ data.synth.val_frac = {s.val_frac + s.test_frac:g} must be < 1 (the rest is the training split)"),
        ("data.val_frac", 0 <= d.val_frac < 1, "must be in [0, 1)"),
        ("data.test_frac", 0 <= d.test_frac < 1, "must be in [0, 1)"),
        ("data.test_frac", d.val_frac + d.test_frac < 1,
         f"+ data.val_frac = {d.val_frac + d.test_frac:g} must be < 1 (the rest is the training split)"),
        ("train.max_epochs", t.max_epochs >= -1, "must be >= 1 (or -1 with train.max_steps > 0)"),
        ("train.max_steps", t.max_steps == -1 or t.max_steps > 0, "must be > 0 (or -1 = off)"),
        ("train.max_epochs", t.max_epochs >= 1 or t.max_steps > 0,
         f"with train.max_steps={t.max_steps}: nothing would train (set max_epochs >= 1 or max_steps > 0)"),
        ("train.lr", t.lr > 0, "must be > 0"),
        ("train.blr", t.blr >= 0, "must be >= 0 (0 = off)"),
        ("train.accumulate", t.accumulate >= 1, "must be >= 1"),
        ("train.weight_decay", t.weight_decay >= 0, "must be >= 0"),
        ("train.betas", len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "must be two values in [0, 1)"),
        ("train.warmup_frac", 0 <= t.warmup_frac < 1, "must be in [0, 1)"),
        ("train.label_smoothing", 0 <= t.label_smoothing < 1, "must be in [0, 1)"),
        ("train.grad_clip", t.grad_clip >= 0, "must be >= 0 (0 = off)"),
        ("train.devices", t.devices >= 1, "must be >= 1"),
        ("train.num_nodes", t.num_nodes >= 1, "must be >= 1"),
        ("train.threads", t.threads >= 1, "must be >= 1"),
        ("train.val_every_n_epochs", t.val_every_n_epochs >= 1, "must be >= 1"),
        ("train.stop_val_loss", t.stop_val_loss >= 0, "must be >= 0 (0 = off)"),
        ("train.checkpoint_every", t.checkpoint_every >= 0, "must be >= 0 (0 = no checkpoints)"),
        ("train.modality_dropout", 0 <= t.modality_dropout <= 1, "must be in [0, 1] (0 = off)"),
        ("train.ogm_alpha", t.ogm_alpha > 0, "must be > 0"),
        ("train.ogm_until", 0 < t.ogm_until <= 1, "must be in (0, 1]"),
        ("train.accelerator", t.accelerator in ACCELERATORS, f"is not one of {', '.join(ACCELERATORS)}"),
        ("train.precision", t.precision in PRECISIONS, f"is not one of {', '.join(PRECISIONS)}"),
        ("eval.top_k", cfg.eval.top_k >= 1, "must be >= 1"),
        ("eval.conditions", len(cfg.eval.conditions) > 0, "must name at least one condition"),
    ]
    return rules


def _check_pretrain_keys(cfg: DictConfig) -> None:
    """A supervised run (``pretrain.objective=none``) refuses ``pretrain.*`` settings: they would change its identity
    and nothing else (a typo for ``fusionbench pretrain``)."""
    if cfg.pretrain.objective != "none":
        return
    defaults = PretrainConfig()
    changed = [f"pretrain.{f.name}={cfg.pretrain[f.name]!r}" for f in fields(PretrainConfig)
               if cfg.pretrain[f.name] != getattr(defaults, f.name)]
    if changed:
        raise ConfigError(f"{', '.join(changed)} set for a supervised run: pretrain.* keys apply only to "
                          f"`fusionbench pretrain` (objective=contrastive|mae)", key=changed[0].split("=")[0])


def validate(cfg: DictConfig) -> None:
    """Checks that need more than the schema, all before anything runs: the fusion, its options (names and types,
    from its constructor's annotations), the preset, choices, and every value's range (``_value_rules``)."""
    from fusionbench.registry import PRESETS, list_fusions, validate_overrides

    if cfg.fusion not in list_fusions():
        raise ConfigError(f"unknown fusion {cfg.fusion!r}; valid: {', '.join(list_fusions())}", key="fusion")
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; valid: {', '.join(PRESETS)}", key="preset")
    options = OmegaConf.to_container(cfg.model, resolve=False)
    try:
        validate_overrides(cfg.fusion, options)
    except KeyError as exc:
        raise ConfigError(f"model: {exc.args[0]}", key="model") from None
    except TypeError as exc:  # "num_bottlenecks='abc' is not int": registry names the option first
        raise ConfigError(f"model.{exc.args[0]}", key=f"model.{str(exc.args[0]).split('=')[0]}") from None
    _check_pretrain_keys(cfg)
    from fusionbench.data.datasets import READERS, check_options

    choices = {"data.dataset": tuple(READERS), "data.task": SYNTH_TASKS,
               "data.on_error": ("raise", "skip"), "data.missing_modality": ("absent", "skip", "error"),
               "data.norm_stats": ("train", "config"), "data.norm_by": ("channel", "feature"),
               "init.inflate": ("central", "average"), "data.synth.drop_mode": ("absent", "noise"),
               "train.balance": ("none", "ogm", "ogm_ge"), "train.lr_schedule": ("cosine", "constant")}
    from fusionbench.nn.model import HEAD_INITS
    from fusionbench.nn.tokenizers import PATCH_EMBEDS

    choices |= {"model.head_init": HEAD_INITS, "model.patch_embed": PATCH_EMBEDS}  # options every fusion shares
    for key, valid in choices.items():
        value = OmegaConf.select(cfg, key)
        if (key == "data.task" and cfg.data.dataset != "synth") or (key.startswith("model.") and value is None):
            continue  # a model option not given keeps the constructor's default
        if value not in valid:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(valid)}", key=key)
    for key, holds, rule in _value_rules(cfg):
        if not holds:
            value = OmegaConf.select(cfg, key)
            value = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
            raise ConfigError(f"{key}={value!r} {rule}", key=key)
    if cfg.train.balance != "none":
        from fusionbench.tasks.ogm_ge import check as check_balance

        reason = check_balance(cfg.fusion, cfg.train.protocol)
        if reason:
            raise ConfigError(f"train.balance={cfg.train.balance!r} {reason}", key="train.balance")
    check_options(cfg.data)
    check_geometry(cfg)
    from fusionbench.evaluate.conditions import parse_condition

    for name in cfg.eval.conditions:
        try:
            parse_condition(name)  # raises ConfigError on an unknown condition
        except ConfigError as exc:
            raise ConfigError(exc.reason, exc.where, key="eval.conditions") from None


def check_geometry(cfg: DictConfig) -> None:
    """The data's input shapes divide into the model's patches, checked before anything is decoded: fbank
    (data.audio.num_mel_bins, target_length) by ``model.audio_patch``, frames (data.video.num_frames, size, size) by
    ``model.video_patch`` (the preset's unless ``model`` overrides them; a ``model.*_shape`` override wins over the
    data's, as in ``fusionbench.train.build``)."""
    from fusionbench.registry import PRESETS

    preset, model = PRESETS[cfg.preset], cfg.model
    a, v = cfg.data.audio, cfg.data.video
    checks = [
        ("audio", tuple(model.get("audio_shape") or (a.num_mel_bins, a.target_length)),
         tuple(model.get("audio_patch") or preset.audio_patch), "data.audio.num_mel_bins / target_length"),
        ("video", tuple(model.get("video_shape") or (v.num_frames, v.size, v.size)),
         tuple(model.get("video_patch") or preset.video_patch), "data.video.num_frames / size"),
    ]
    for modality, shape, patch, data_keys in checks:
        if len(shape) != len(patch) or any(int(s) % int(p) for s, p in zip(shape, patch)):
            key = f"model.{modality}_patch"
            raise ConfigError(f"{key}={list(patch)} does not divide the {modality} input {list(shape)} ({data_keys}"
                              f"{'' if f'{modality}_patch' in model else f', preset {cfg.preset}'}): set {key} or "
                              f"change the data geometry", key=key)


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
    kept = {k: v for k, v in kept.items() if k not in HASHED_UNLESS_DEFAULT or v != HASHED_UNLESS_DEFAULT[k]}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def data_root(data: DictConfig) -> Path:
    """The folder a dataset's paths resolve in: ``data.root`` (relative to the project root), or the folder of
    ``data.manifest`` when only a manifest is given (``data.root`` left at its default)."""
    if data.manifest and data.root == DataConfig.root:
        return project_path(str(data.manifest)).parent
    return project_path(str(data.root))


def dataset_name(cfg: DictConfig) -> str:
    """The dataset as leaderboards name it; two datasets never share one (fusionbench's rule).

    ``synth-<task>`` (+ ``drop_suffix`` where clips lose a modality); ``<dataset>-<root folder name>`` for a real
    dataset (``vggsound-VGGSound``); ``clips-<folder>-
    <6 hex of the resolved folder>`` for a generic clips.csv (users' folders are often called ``data`` or ``clips``).
    """
    if cfg.data.dataset == "synth":
        s = cfg.data.synth
        return f"synth-{cfg.data.task}{drop_suffix(s.drop_p, s.drop_mode, list(s.drop_splits))}"
    root = data_root(cfg.data).resolve()
    if cfg.data.dataset == "clips":
        return f"clips-{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:6]}"
    return f"{cfg.data.dataset}-{root.name}"


def drop_suffix(drop_p: float, drop_mode: str = "absent", drop_splits: list[str] | tuple[str, ...] = ("train",)) -> str:
    """A synthetic set's name suffix for ``data.synth.drop_p`` > 0 (a set with failing modalities is another dataset):
    ``-drop0.5``, then ``-noise`` for destroyed streams, then the splits unless train only (``-train+val+test``)."""
    if not drop_p:
        return ""
    splits = [x for x in ("train", "val", "test") if x in drop_splits]
    return (f"-drop{float(drop_p):g}" + ("-noise" if drop_mode == "noise" else "")
            + ("" if splits == ["train"] else "-" + "+".join(splits)))


def project_path(path: str | Path) -> Path:
    """Relative paths in configs are relative to the project root."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path
