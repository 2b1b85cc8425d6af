"""Pretrain one configuration without labels (``fusionbench pretrain``), recorded as one MLflow run.

``pretrain.objective``: ``contrastive`` (tasks/contrastive.py) or ``mae`` (tasks/mae.py). The run trains on the
training split (labels ignored), validates on the val split, and saves the encoder — the fusion model's
``state_dict()``, classification heads included, without the objective's projection heads or decoders — with
``torch.save`` as the artifact ``encoder.pt`` (loadable with ``torch.load(weights_only=True)``). Its path is the tag
``fb.checkpoint`` and its sha256 ``fb.checkpoint_sha256`` (with ``fb.objective``, ``fb.kind=pretrain``), so a
downstream run can start from it with ``init.model=<that path>`` and is tagged ``fb.pretrain_run=<this run>``.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from fusionbench import tracking
from fusionbench.config import ConfigError, dataset_name
from fusionbench.data.datamodule import AVDataModule
from fusionbench.evaluate.efficiency import count_params
from fusionbench.init import file_sha256
from fusionbench.progress import EpochLine, MLflowEpochMetrics, quiet_lightning
from fusionbench.registry import create_model
from fusionbench.tasks.pretrain_base import PretrainTask

OBJECTIVES = ("contrastive", "mae")
CHECKPOINT = "encoder.pt"


def check_pretrain(cfg: DictConfig) -> None:
    """The pretrain section's values, before anything runs (ConfigError naming the key)."""
    p = cfg.pretrain
    rules = [
        ("pretrain.objective", p.objective in OBJECTIVES, f"is not one of {', '.join(OBJECTIVES)}"),
        ("pretrain.temperature", p.temperature > 0, "must be > 0"),
        ("pretrain.proj_dim", p.proj_dim >= 1, "must be >= 1"),
        ("pretrain.fusion_weight", p.fusion_weight >= 0, "must be >= 0"),
        ("pretrain.mask_ratio_video", 0 <= p.mask_ratio_video < 1, "must be in [0, 1)"),
        ("pretrain.mask_ratio_audio", 0 <= p.mask_ratio_audio < 1, "must be in [0, 1)"),
        ("pretrain.decoder_dim", p.decoder_dim >= 1 and p.decoder_dim % p.decoder_heads == 0,
         f"must be >= 1 and divisible by pretrain.decoder_heads={p.decoder_heads}"),
        ("pretrain.decoder_depth", p.decoder_depth >= 1, "must be >= 1"),
        ("pretrain.decoder_heads", p.decoder_heads >= 1, "must be >= 1"),
    ]
    for key, holds, rule in rules:
        if not holds:
            from omegaconf import OmegaConf

            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} {rule}", key=key)


def build_pretrain(cfg: DictConfig) -> tuple[AVDataModule, PretrainTask]:
    """The datamodule (set up for fit) and the objective's task around a fresh model at the data's geometry."""
    check_pretrain(cfg)
    datamodule = AVDataModule(cfg.data, seed=cfg.seed, conditions=[])
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = create_model(
        cfg.fusion, datamodule.num_classes, cfg.preset,
        **{"audio_shape": datamodule.audio_shape, "video_shape": datamodule.video_shape, **cfg.model},
    )
    if cfg.pretrain.objective == "contrastive":
        from fusionbench.tasks.contrastive import ContrastiveTask as Task
    else:
        from fusionbench.tasks.mae import MAETask as Task
    try:
        task = Task(model, cfg.pretrain, cfg.train, cfg.data.batch_size)
    except ValueError as exc:  # e.g. objective=mae for a fusion it does not support
        raise ConfigError(str(exc), key="pretrain.objective") from None
    return datamodule, task


def save_encoder(model: torch.nn.Module, path: Path) -> Path:
    """The model's state dict (tensors only, on CPU) → ``path``, readable with ``torch.load(weights_only=True)``."""
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def run(cfg: DictConfig) -> str:
    """Pretrain ``cfg.fusion`` with ``cfg.pretrain.objective``; log to MLflow; return the run id."""
    from fusionbench.train import _trainer  # the supervised run's Trainer settings (epochs, precision, clipping)

    check_pretrain(cfg)
    if cfg.train.accelerator in ("cpu", "auto") and not torch.cuda.is_available():
        torch.set_num_threads(cfg.train.threads)
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    label = f"pretrain/{cfg.pretrain.objective}/{cfg.fusion}/{dataset_name(cfg)}/s{cfg.seed}"
    with tracking.tracked_run(cfg) as tracked:
        tracked.set_tags({"fb.kind": "pretrain", "fb.objective": cfg.pretrain.objective})
        datamodule, task = build_pretrain(cfg)
        train_clips = len(datamodule.data["train"].index)
        tracked.log_metrics({
            "model/params": count_params(task.model),
            "pretrain/params_objective": count_params(task) - count_params(task.model),  # projections / decoders
            "data/train_clips": train_clips,
            "train/lr_effective": task.lr,
            "train/effective_batch": task.effective_batch,
        })
        print(f"[{label}] {count_params(task.model):,} encoder parameters, {train_clips} training clips", flush=True)
        from fusionbench.tasks.divergence import DivergenceCheck

        trainer = _trainer(cfg, [EpochLine(label), MLflowEpochMetrics(tracked), DivergenceCheck()])
        start = time.perf_counter()
        trainer.fit(task, datamodule=datamodule)
        train_s = time.perf_counter() - start
        tracked.log_metrics({"train/epochs": trainer.current_epoch, "time/train_s": train_s})
        if trainer.is_global_zero:
            with tempfile.TemporaryDirectory() as tmp:
                saved = save_encoder(task.model, Path(tmp) / CHECKPOINT)
                sha256 = file_sha256(str(saved))
                tracked.log_artifact(saved)
            path = tracked.artifact_dir / CHECKPOINT
            tracked.set_tags({"fb.checkpoint": str(path), "fb.checkpoint_sha256": sha256})
            print(f"[{label}] encoder checkpoint {path}  (train {train_s:.1f} s)", flush=True)
        return tracked.run_id
