"""Train and evaluate one configuration, recorded as one MLflow run. ``run(cfg)`` is also the sweep's cell runner."""
from __future__ import annotations

import time
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig

from fusionbench import tracking
from fusionbench.config import dataset_name
from fusionbench.data.datamodule import AVDataModule
from fusionbench.data.prepare import log_leak_probe
from fusionbench.data.report import log_data_report, run_report, summarise
from fusionbench.evaluate.conditions import parse_condition
from fusionbench.evaluate.efficiency import count_params, forward_flops
from fusionbench.evaluate.profile import PeakMemory, count_flops
from fusionbench.init import apply_init, log_init
from fusionbench.progress import EpochLine, MLflowEpochMetrics, quiet_lightning
from fusionbench.registry import create_model
from fusionbench.tasks import checkpoints
from fusionbench.tasks.classify import ClassifyTask

warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _trainer(cfg: DictConfig, callbacks: list, **overrides) -> L.Trainer:
    t = cfg.train
    args = dict(
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        gradient_clip_val=t.grad_clip or None,
        accumulate_grad_batches=t.accumulate,
        deterministic=t.deterministic,
        check_val_every_n_epoch=t.val_every_n_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    return L.Trainer(**{**args, **overrides})


def leave_process_group() -> None:
    """DDP, after fit: every rank waits for the others, then leaves the process group (fusionbench's rule).

    Rank 0 then scores the test split alone, in a fresh one-device Trainer, while the other ranks return. Were the
    group still there, that Trainer's first collective would wait forever for ranks that have gone: Lightning's
    ``prepare_data`` barrier creates a new gloo group (``_InfiniteBarrier``), torchmetrics' ``compute`` gathers."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _stopping(train_cfg: DictConfig) -> list[EarlyStopping]:
    """``train.stop_val_loss > 0``: stop at the first validation whose loss is below it (never on patience)."""
    if not train_cfg.stop_val_loss:
        return []
    return [EarlyStopping(monitor="val/loss", mode="min", stopping_threshold=float(train_cfg.stop_val_loss),
                          patience=2**31 - 1, check_on_train_epoch_end=False)]


def reference_rates(test_labels: torch.Tensor, num_classes: int, multilabel: bool) -> dict[str, float]:
    """What a model that learnt nothing scores on the test split: ``data/chance`` = 1 / C (top-1 of a uniform guess)
    and ``data/majority_test`` = the share of the most frequent test class (top-1 of always naming it). Multi-label
    sets log only ``data/num_classes`` (chance mAP is each class's prevalence, not one number)."""
    rates = {"data/num_classes": float(num_classes)}
    if not multilabel and len(test_labels):
        rates["data/chance"] = 1.0 / num_classes
        rates["data/majority_test"] = float(torch.bincount(test_labels, minlength=num_classes).max()) / len(test_labels)
    return rates


def build(cfg: DictConfig) -> tuple[AVDataModule, ClassifyTask]:
    """The datamodule and the task for a resolved config (data set up, model built at the data's geometry)."""
    conditions = [parse_condition(name) for name in cfg.eval.conditions]
    datamodule = AVDataModule(cfg.data, seed=cfg.seed, conditions=conditions, test_windows=cfg.eval.test_windows)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = create_model(
        cfg.fusion,
        datamodule.num_classes,
        cfg.preset,
        **{"audio_shape": datamodule.audio_shape, "video_shape": datamodule.video_shape, **cfg.model},
    )
    from fusionbench.tasks.probe import wrap  # train.protocol=linear_probe: frozen encoder, BatchNorm + linear head
    model.init_report = apply_init(model, cfg.init)  # pretrained weights from local files (None: random)

    model = wrap(model, cfg.train.protocol, datamodule.num_classes)
    task = ClassifyTask(
        model,
        datamodule.num_classes,
        datamodule.multilabel,
        cfg.train,
        test_conditions=datamodule.test_conditions,
        top_k=cfg.eval.top_k,
        batch_size=cfg.data.batch_size,  # train.blr: lr = blr × batch × devices × num_nodes × accumulate / 256
    )
    return datamodule, task


def run(cfg: DictConfig) -> str:
    """Fit ``cfg.fusion`` on ``cfg.data``, evaluate every condition, log everything to MLflow; return the run id."""
    if cfg.train.accelerator in ("cpu", "auto") and not torch.cuda.is_available():
        torch.set_num_threads(cfg.train.threads)
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    label = f"{cfg.fusion}/{dataset_name(cfg)}/s{cfg.seed}"
    with tracking.tracked_run(cfg) as tracked:
        datamodule, task = build(cfg)
        log_leak_probe(tracked, datamodule, log=lambda line: print(f"[{label}] {line}", flush=True))  # cached
        log_init(tracked, task.model, log=lambda line: print(f"[{label}] {line}", flush=True))  # + init_report.json
        geometry = (datamodule.audio_shape, datamodule.video_shape)
        train_clips = len(datamodule.data["train"].index)
        tracked.log_metrics(
            {
                "model/params": count_params(task.model),
                "model/gflops": forward_flops(task.model, *geometry) / 1e9,
                "data/skipped": len(datamodule.skipped),
                "data/train_clips": train_clips,
                "train/lr_effective": task.lr,  # the peak lr the optimiser uses (train.lr, or the blr rule)
                "train/effective_batch": task.effective_batch,
                **reference_rates(datamodule.labels("test"), datamodule.num_classes, datamodule.multilabel),
                **{f"data/norm/{k}": v for k, v in datamodule.norm_stats.items()},
            }
        )
        report = run_report(datamodule)  # every clip's status, logged as data_report.csv with the run
        log_data_report(tracked, report)
        print(f"[{label}] {summarise(report).splitlines()[0]}", flush=True)
        print(f"[{label}] {count_params(task.model):,} parameters, {train_clips} training clips", flush=True)
        start = time.perf_counter()
        from fusionbench.tasks.divergence import DivergenceCheck  # NaN/inf loss: TrainingDiverged, run "diverged"

        callbacks = [EpochLine(label), MLflowEpochMetrics(tracked), DivergenceCheck(), *_stopping(cfg.train)]
        saving = checkpoints.Saving(cfg, tracked, log=lambda line: print(f"[{label}] {line}", flush=True))
        trainer = _trainer(cfg, [*callbacks, *saving.callbacks], enable_checkpointing=bool(saving.callbacks))
        if cfg.train.compile:  # torch.compile of the fusion's forward, in place: parameter names stay the same
            task.model.compile()
        peak = PeakMemory(trainer.strategy.root_device)  # CUDA: max allocated on this rank's device; CPU: RSS growth
        trainer.fit(task, datamodule=datamodule, ckpt_path=saving.resume_from, weights_only=True)
        train_s = time.perf_counter() - start
        leave_process_group()
        tracked.log_metrics({
            "train/epochs": trainer.current_epoch,  # < max_epochs when stop_val_loss stopped it
            # cost beside accuracy (fusionbench profile measures it apart, without data loading or validation)
            "cost/train_clips_s": train_clips * (trainer.current_epoch - saving.epochs_before) / train_s,
            "cost/peak_mem_mb": peak.read(),
            "model/gflops_fwd_bwd": count_flops(task.model, backward=True) / 1e9,
        })
        if not trainer.is_global_zero:  # DDP: rank 0 scores the test split alone, every clip once (never sharded)
            return tracked.run_id
        start = time.perf_counter()
        _trainer(cfg, [], devices=1, num_nodes=1, strategy="auto").test(task, datamodule=datamodule, verbose=False)
        results = dict(task.test_results)
        tracked.log_metrics({**results, "time/train_s": train_s, "time/test_s": time.perf_counter() - start})
        headline = task.headline
        shown = "  ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in results.items() if k.endswith(f"/{headline}"))
        print(f"[{label}] test {headline}: {shown}  (train {train_s:.1f} s)", flush=True)
        saving.finish()  # checkpoints → the run's artifacts; the folder goes (a finished run is never resumed)
        return tracked.run_id
