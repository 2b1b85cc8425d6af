"""Supervised audio-visual classification around any registered fusion model.

Multiclass: cross-entropy with label smoothing; multilabel: binary cross-entropy on smoothed targets
(``smooth_multilabel``). The training loss is the model's own rule (``model.loss``: e.g. MBT/late average the
per-modality losses). AdamW with per-step linear warm-up then cosine decay to 0 (steps = optimiser steps, after
gradient accumulation); weight decay on the weights of Linear/Conv layers only (``decay_groups``, ViT/MAE practice).
Peak lr: ``train.lr``, or the papers' rule ``blr × effective batch / 256`` when ``train.blr > 0`` (``peak_lr``).
Under DDP the epoch's train loss and val metrics are reduced over the ranks (``sync_dist``, torchmetrics' sync); the
val loss is a clip-weighted ``MeanMetric``: the validation shards differ in size (``data/shards.py``), and Lightning's
``sync_dist`` mean divides its integer batch count by the world size in integers (4 + 3 clips → 3, not 3.5).
Test: every evaluation condition (``av``, ``audio_only``, ``video_only``, corruptions) gets its own metric collection;
results land in ``self.test_results`` as ``{"test/<condition>/<metric>": value}``, with ``test/<condition>/clips`` the
number of clips scored (a clip missing the one modality a condition keeps has no input there and is left out).
Clips with a missing modality (batch masks ``audio_present`` / ``video_present``) go through the fusion's unimodal
path, in training, validation and test alike (``tasks/presence.py``).
Training options: ``train.modality_dropout`` marks one modality of training clips absent (``tasks/modality_dropout.py``);
``train.balance=ogm|ogm_ge`` modulates each modality's encoder gradients after backward (``tasks/ogm_ge.py``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric

from fusionbench.evaluate.conditions import Condition
from fusionbench.nn.model import FusionModel
from fusionbench.tasks import ogm_ge
from fusionbench.tasks.metrics import classification_metrics, headline_metric
from fusionbench.tasks.modality_dropout import apply_modality_dropout, drop_generator
from fusionbench.tasks.presence import forward_present, forward_windows, present_loss


def warmup_cosine(step: int, total: int, warmup: int, decay: bool = True) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then half-cosine from 1 to 0 at ``total`` (``decay``), or
    1 to the end (``decay=False``: ``train.lr_schedule=constant``)."""
    if step < warmup:
        return (step + 1) / warmup
    if not decay:
        return 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


DECAYED_MODULES = (nn.Linear, nn.modules.conv._ConvNd)  # their ``weight`` is decayed; nothing else is


def decay_groups(model: nn.Module) -> tuple[list[str], list[str]]:
    """(decayed, not decayed) parameter names, chosen by what each parameter is, never by its name.

    Decayed: the ``weight`` of every Linear / Conv layer (attention and MLP projections, the tokenizers' patch
    projections, the heads). Not decayed: biases, every parameter of a norm layer (LayerNorm, BatchNorm, ...), and
    every parameter registered directly on any other module: positional embeddings, CLS tokens, bottlenecks,
    fusion / aggregation tokens, readout queries (ViT / MAE / DeepAVFusion practice). A parameter shared by two
    modules is listed once, under its first name.
    """
    decay, plain, seen = [], [], set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            (decay if isinstance(module, DECAYED_MODULES) and param_name == "weight" else plain).append(name)
    return decay, plain


def adamw_warmup_cosine(module: nn.Module, train_cfg: DictConfig, lr: float, total: int) -> dict:
    """AdamW over every trainable parameter of ``module`` (decay groups as ``decay_groups``), per-step linear
    warm-up then cosine to 0 over ``total`` optimiser steps (Lightning's ``estimated_stepping_batches``, already
    divided by accumulation). Shared by the supervised and the pretraining tasks.

    ``fused``: one kernel for every parameter (optimiser step 15 → 6 ms on CPU, MBT, small preset); not under mixed
    precision, where Lightning refuses to clip the gradients of an optimiser that unscales them itself."""
    params = dict(module.named_parameters())
    decay, plain = decay_groups(module)
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": train_cfg.weight_decay, "names": decay},
        {"params": [params[n] for n in plain], "weight_decay": 0.0, "names": plain},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(train_cfg.betas),
                                  fused="mixed" not in str(train_cfg.precision))
    warmup = max(1, int(train_cfg.warmup_frac * total))
    decay = train_cfg.lr_schedule == "cosine"
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup, decay))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def effective_batch(train_cfg: DictConfig, batch_size: int) -> int:
    """Samples per optimiser step: data.batch_size × train.devices × train.num_nodes × train.accumulate."""
    nodes = int(train_cfg.get("num_nodes", 1))
    return int(batch_size) * int(train_cfg.devices) * nodes * int(train_cfg.accumulate)


def peak_lr(train_cfg: DictConfig, batch_size: int) -> float:
    """``train.blr > 0``: the papers' rule (MAE, DeepAVFusion) lr = blr × effective batch / 256; else ``train.lr``."""
    if train_cfg.blr and train_cfg.blr > 0:
        return float(train_cfg.blr) * effective_batch(train_cfg, batch_size) / 256
    return float(train_cfg.lr)


def smooth_multilabel(target: Tensor, eps: float) -> Tensor:
    """Multi-hot targets smoothed as scenic's ``apply_label_smoothing`` does for MBT's sigmoid cross-entropy
    (google-research/scenic ``model_lib/base_models/model_utils.py``): y · (1 − ε) + ε / K, K = number of classes
    (not the binary ε / 2 rule). (B, K) → (B, K) float."""
    target = target.float()
    return target * (1.0 - eps) + eps / target.shape[-1] if eps else target


class ClassifyTask(L.LightningModule):
    def __init__(
        self,
        model: FusionModel,
        num_classes: int,
        multilabel: bool,
        train_cfg: DictConfig,
        test_conditions: Sequence[Sequence[Condition]] = (),
        top_k: int = 5,
        batch_size: int | None = None,
    ) -> None:
        """``batch_size``: the per-device data batch size (data.batch_size); needed for ``train.blr``."""
        super().__init__()
        if train_cfg.blr and train_cfg.blr > 0 and batch_size is None:
            raise ValueError("train.blr needs the data batch size (ClassifyTask(batch_size=...))")
        self.effective_batch = effective_batch(train_cfg, batch_size) if batch_size is not None else None
        self.lr = peak_lr(train_cfg, batch_size) if batch_size is not None else float(train_cfg.lr)
        self.model = model
        self.multilabel = multilabel
        self.train_cfg = train_cfg
        self.test_conditions = [list(group) for group in test_conditions]
        self.headline = headline_metric(multilabel)
        self.val_metrics = classification_metrics(num_classes, multilabel, top_k)
        self.val_loss = MeanMetric()  # weighted by clips; synced over DDP ranks by torchmetrics
        names = [c.name for g in self.test_conditions for c in g]
        # a list, not a ModuleDict: condition names such as ``video_noise_0.25`` contain dots
        self.test_names = {name: i for i, name in enumerate(names)}
        self.test_metrics = nn.ModuleList(classification_metrics(num_classes, multilabel, top_k) for _ in names)
        self.test_loss: dict[str, list[Tensor]] = {}
        self.test_results: dict[str, float] = {}
        # seed_everything(cfg.seed) ran before the task is built: the run seed, for the stateless per-batch draws
        self.run_seed = torch.initial_seed()
        self.modality_dropout = float(train_cfg.get("modality_dropout", 0.0))
        self.balance = str(train_cfg.get("balance", "none"))
        if self.balance not in ogm_ge.BALANCE:
            raise ValueError(f"train.balance={self.balance!r} is not one of {', '.join(ogm_ge.BALANCE)}")
        # {modality: its encoder's weights} (raises for a fusion without per-modality streams)
        self.ogm_params = ogm_ge.modulated_parameters(model) if self.balance != "none" else {}
        self._ogm_k: dict[str, float] | None = None  # this batch's coefficients, set in training_step
        self._ogm_key: tuple[int, int] = (0, 0)  # (global step, batch index) of this batch: seeds its GE noise
        self._ogm_before: dict[int, Tensor] | None = None  # gradients before this batch's backward (accumulation)

    def criterion(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.multilabel:  # mean over samples and classes (scenic sums the classes: a constant factor K)
            return F.binary_cross_entropy_with_logits(logits, smooth_multilabel(target, self.train_cfg.label_smoothing))
        return F.cross_entropy(logits, target, label_smoothing=self.train_cfg.label_smoothing)

    def forward(self, audio: Tensor | None = None, video: Tensor | None = None):
        return self.model(audio=audio, video=video)

    def _forward(self, batch: dict, audio: bool = True, video: bool = True):
        """The model on ``batch`` by per-clip presence (``forward_present``); ``audio`` / ``video`` False drops that
        modality for every clip (the audio_only / video_only conditions). A batch of several windows per clip
        (``video`` (B, W, 3, T, H, W)) gets each clip's logits averaged over its windows (``forward_windows``)."""
        forward = forward_windows if batch["video"].dim() == 6 else forward_present
        return forward(self.model, batch["audio"] if audio else None, batch["video"] if video else None,
                               batch.get("audio_present"), batch.get("video_present"))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if self.modality_dropout > 0:  # drawn per batch from (seed, rank, step, batch): resume-exact
            generator = drop_generator(self.run_seed, self.global_rank, self.global_step, batch_idx)
            batch = apply_modality_dropout(batch, self.modality_dropout, generator)
        out = self._forward(batch)
        if self.balance != "none":  # the coefficients applied (1 after the modulation window)
            active = self._ogm_active()
            if active:
                self._ogm_k = self._ogm_coefficients(batch, out)
                self._ogm_key = (self.global_step, batch_idx)
            logged = {f"train/ogm_k_{m}": self._ogm_k[m] if active else 1.0 for m in ogm_ge.MODALITIES}
            if active:  # ρ_a is measured only inside the window (for mid / MBT / DeepAVFusion it costs a forward)
                logged["train/ogm_ratio_audio"] = self._ogm_k["ratio_audio"]
            self.log_dict(logged, on_step=False, on_epoch=True, batch_size=len(batch["label"]))
        loss = present_loss(self.model, out, batch["label"], self.criterion)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["label"]), sync_dist=True)
        return loss

    def _ogm_active(self) -> bool:
        """Within the first ``train.ogm_until`` of the optimiser steps (the paper's modulation window)."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return True
        until = float(self.train_cfg.get("ogm_until", ogm_ge.PAPER_UNTIL))
        return self.global_step < until * int(trainer.estimated_stepping_batches)

    def _ogm_coefficients(self, batch: dict, out) -> dict[str, float]:
        """k_a, k_v (and ρ_a) of this batch from the clips that have both modalities (``ogm_ge.coefficients``);
        under DDP the summed scores are summed over the ranks first."""
        device = batch["label"].device
        both = torch.ones(len(batch["label"]), dtype=torch.bool, device=device)  # (B,)
        for mask in (batch.get("audio_present"), batch.get("video_present")):
            if mask is not None:
                both = both & mask.to(device).bool()
        scores = torch.zeros(2, dtype=torch.float64, device=device)
        if bool(both.any()):  # forward_present runs the A+V group first: groups[0]
            rows = None if out.rows is None else both.nonzero().squeeze(1)  # (B_av,)
            pick = (lambda x: x) if rows is None else (lambda x: x[rows])
            logits = ogm_ge.unimodal_logits(self.model, out.groups[0][1], pick(batch["audio"]), pick(batch["video"]))
            target = pick(batch["label"])
            scores = torch.stack([ogm_ge.true_class_score(logits[m], target, self.multilabel)
                                  for m in ogm_ge.MODALITIES])  # (2,): s_a, s_v
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            scores = trainer.strategy.reduce(scores, reduce_op="sum")
        alpha = float(self.train_cfg.get("ogm_alpha", ogm_ge.PAPER_ALPHA))
        return ogm_ge.coefficients(float(scores[0]), float(scores[1]), alpha)

    def on_before_backward(self, loss: Tensor) -> None:
        if self._ogm_k is not None and int(self.train_cfg.accumulate) > 1:  # keep what earlier batches added
            self._ogm_before = {id(p): p.grad.detach().clone() for plist in self.ogm_params.values()
                                for p in plist if p.grad is not None}

    def on_after_backward(self) -> None:
        """OGM(-GE): this batch's encoder gradients scaled by k_u (+ GE noise), before clipping and the step."""
        if self._ogm_k is None:
            return
        generator = ogm_ge.noise_generator(self.run_seed, self._ogm_key[0] * 1_000_003 + self._ogm_key[1])
        ogm_ge.modulate(self.ogm_params, self._ogm_k, self.balance == "ogm_ge", generator, self._ogm_before)
        self._ogm_k, self._ogm_before = None, None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self._forward(batch)
        target = out.kept(batch["label"])
        self.val_loss.update(self.criterion(out.logits, target), weight=len(target))
        self.val_metrics.update(out.logits.float(), target)

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss.compute(), sync_dist=True)  # already global: sync_dist averages equals
        self.val_loss.reset()
        self.log_dict({f"val/{k}": v for k, v in self.val_metrics.compute().items()}, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        for condition in self.test_conditions[dataloader_idx]:
            out = self._forward(batch, audio=condition.drop != "audio", video=condition.drop != "video")
            target = out.kept(batch["label"])
            if not len(target):  # no clip of this batch has the modality this condition keeps
                continue
            self.test_metrics[self.test_names[condition.name]].update(out.logits.float(), target)
            loss = self.criterion(out.logits.float(), target) * len(target)
            self.test_loss.setdefault(condition.name, []).append(torch.stack([loss, torch.tensor(len(target))]))

    def on_test_epoch_end(self) -> None:
        results = {}
        for name, metrics in zip(self.test_names, self.test_metrics):
            total = torch.stack(self.test_loss.pop(name)).sum(0) if name in self.test_loss else None  # (loss·n, n)
            results[f"test/{name}/clips"] = float(total[1]) if total is not None else 0.0
            if total is not None:  # no clip scored: no metric (never a 0 that reads as a result)
                for metric, value in metrics.compute().items():
                    results[f"test/{name}/{metric}"] = float(value)
                results[f"test/{name}/loss"] = float(total[0] / total[1])
            metrics.reset()
        self.test_results = results

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.model, self.train_cfg, self.lr, int(self.trainer.estimated_stepping_batches))
