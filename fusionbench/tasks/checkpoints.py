"""Checkpoints of a run and the resume rule (fusionbench's own, on Lightning's ModelCheckpoint).

Where: ``<tracking store dir>/checkpoints/<experiment>/<identity>`` (or under ``train.checkpoint_dir``), one folder
per run identity (fusion, dataset, config hash + data fingerprint, seed), so only the process holding that
identity's lock (``tracking.identity_lock``) ever writes it. What: ``epochNNNN.ckpt`` every
``train.checkpoint_every`` epochs (all kept) and ``last.ckpt``, a link to the newest one.

The resume rule: a run that finds ``last.ckpt`` (or any ``epoch*.ckpt``) in its identity's folder resumes from it;
a finished run logs its checkpoints with its MLflow run and removes the folder, so only an unfinished (killed or
failed) run of the same identity is ever resumed; a changed config is another identity, another folder.

Lightning restores the weights, the optimiser, the LR scheduler, the loops (epoch, step) and the callbacks, but not
the random state: :class:`RngCheckpoint` saves and restores the global torch / numpy / Python generators and the
training loader's shuffling generator, so a resumed run draws exactly what the uninterrupted one does. Everything it
saves is a tensor, a number, a string or a list/tuple/dict of them: checkpoints load with ``weights_only=True``
(no allow-listed globals needed).
"""
from __future__ import annotations

import hashlib
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig

LAST = "last.ckpt"
STATE_KEY = "fusionbench"  # our entry in the checkpoint dict


def checkpoint_dir(cfg: DictConfig) -> Path:
    """The identity's checkpoint folder (see the module docstring)."""
    from fusionbench.config import project_path
    from fusionbench.tracking import identity_of, store_dir

    key = identity_of(cfg).key
    experiment = str(cfg.tracking.experiment)
    base = (project_path(cfg.train.checkpoint_dir) if cfg.train.checkpoint_dir else
            store_dir(cfg.tracking.store, cfg.tracking.state_dir))
    safe_exp = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
    safe_key = re.sub(r"[^A-Za-z0-9_.-]+", "_", key.replace("/", "__"))[:120]
    digest = hashlib.sha1(f"{experiment}\0{key}".encode()).hexdigest()[:8]
    return base / "checkpoints" / safe_exp / f"{safe_key}.{digest}"


def resume_point(folder: Path) -> Path | None:
    """The checkpoint a run in ``folder`` resumes from: ``last.ckpt`` (its target), else the newest
    ``epoch*.ckpt``; None when there is none (a fresh start)."""
    last = folder / LAST
    if last.exists():  # a dangling link does not exist
        return last.resolve()
    periodic = sorted(folder.glob("epoch*.ckpt"))
    return periodic[-1] if periodic else None


def checkpoint_callback(cfg: DictConfig, folder: Path) -> ModelCheckpoint:
    """Every ``train.checkpoint_every`` epochs, at the end of the training epoch (after its validation):
    ``epochNNNN.ckpt`` (Lightning's 0-based epoch index, every one kept) and ``last.ckpt`` linked to it."""
    return ModelCheckpoint(dirpath=str(folder), filename="epoch{epoch:04d}", auto_insert_metric_name=False,
                           every_n_epochs=int(cfg.train.checkpoint_every), save_top_k=-1, save_last="link",
                           save_on_train_epoch_end=True, enable_version_counter=False)


def _rng_state(train_generator: torch.Generator | None) -> dict[str, Any]:
    """The global random state as weights_only-loadable values (numpy's key array as a tensor)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(py_state), py_gauss],
        "train_loader": train_generator.get_state() if train_generator is not None else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def _train_generator(trainer: L.Trainer) -> torch.Generator | None:
    loader = trainer.train_dataloader
    return getattr(loader, "generator", None)


class RngCheckpoint(Callback):
    """Saves the random state (and the MLflow run id that wrote the checkpoint) in every checkpoint; on resume sets
    the training loader's generator as the loader is made (before it draws its first seed) and the global state
    at ``on_train_start`` (just before the first resumed batch): the resumed epochs draw what the uninterrupted
    run's did."""

    def __init__(self, run_id: str | None = None, on_resume: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.run_id, self.on_resume = run_id, on_resume
        self.loaded: dict[str, Any] | None = None  # our entry of the checkpoint resumed from

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[STATE_KEY] = {"rng": _rng_state(_train_generator(trainer)), "run_id": self.run_id or "",
                                 "epochs_done": trainer.current_epoch + 1}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.loaded = checkpoint.get(STATE_KEY)
        if self.loaded is None:
            return
        if self.on_resume is not None:
            self.on_resume(self.loaded)
        wanted = self.loaded["rng"]["train_loader"]
        datamodule = trainer.datamodule
        if wanted is None or datamodule is None:
            return
        made = datamodule.train_dataloader

        def restored():  # one shot: the loader Lightning asks for first gets the saved generator state
            del datamodule.train_dataloader  # the instance attribute: back to the class's method
            loader = made()
            if getattr(loader, "generator", None) is not None:
                loader.generator.set_state(wanted)
            return loader

        datamodule.train_dataloader = restored

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.loaded is not None:
            _set_rng_state(self.loaded["rng"])


def log_and_clear(tracked: Any, folder: Path) -> int:
    """Log the final checkpoint as the run's artifact (``checkpoints/``), then remove the folder (a finished run is
    never resumed); return the number logged. Only the newest: the periodic ones exist for resuming, and a ViT-B's
    are about 1 GB each (fusionbench's choice)."""
    if not folder.is_dir():
        return 0
    files = sorted(folder.glob("epoch*.ckpt"))[-1:]
    for path in files:
        tracked.log_artifact(path, "checkpoints")
    shutil.rmtree(folder)
    return len(files)


class Saving:
    """One run's checkpointing: its callbacks, the checkpoint it resumes from (None: a fresh start) and, once the run
    has finished, :meth:`finish`. A resumed MLflow run is tagged ``fb.resumed_from`` (the checkpoint file),
    ``fb.resumed_from_run`` (the run id that wrote it) and ``fb.resumed_epochs`` (epochs it had done)."""

    def __init__(self, cfg: DictConfig, tracked: Any, log: Callable[[str], None] = print) -> None:
        self.tracked, self.log = tracked, log
        self.folder = checkpoint_dir(cfg) if cfg.train.checkpoint_every else None
        self.resume_from = resume_point(self.folder) if self.folder else None
        self.epochs_before = 0  # epochs done before this process started (from the checkpoint)
        self.rng = RngCheckpoint(tracked.run_id, on_resume=self._resumed)
        self.callbacks: list[Callback] = [checkpoint_callback(cfg, self.folder), self.rng] if self.folder else []
        if self.resume_from is not None:
            tracked.set_tags({"fb.resumed_from": str(self.resume_from)})

    def _resumed(self, entry: dict[str, Any]) -> None:
        self.epochs_before = int(entry["epochs_done"])
        self.tracked.set_tags({"fb.resumed_from_run": entry["run_id"], "fb.resumed_epochs": self.epochs_before})
        self.log(f"resumed from {self.resume_from} ({self.epochs_before} epochs done, run {entry['run_id']})")

    def finish(self) -> None:
        """The run finished: its checkpoints become artifacts, the folder goes."""
        if self.folder is not None:
            log_and_clear(self.tracked, self.folder)
