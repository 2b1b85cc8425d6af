"""The optimiser: which parameters are decayed (per fusion, exactly), the peak lr rule (train.blr), and the per-step
warm-up + cosine schedule as a real Lightning fit applies it, with gradient accumulation."""
from __future__ import annotations

import itertools
import math
import re

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from fusionbench.config import TrainConfig
from fusionbench.registry import PRESETS, create_model, list_fusions
from fusionbench.tasks.classify import ClassifyTask, decay_groups, effective_batch, peak_lr


def expand(*patterns: str) -> set[str]:
    """Shell-style braces: ``expand("a.{x,y}.b")`` → {"a.x.b", "a.y.b"}."""
    out: set[str] = set()
    for pattern in patterns:
        parts = re.split(r"\{([^}]*)\}", pattern)
        choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
        out |= {"".join(c) for c in itertools.product(*choices)}
    return out


def block(prefix: str) -> set[str]:
    """A transformer block's no-decay parameters: its two LayerNorms and every bias."""
    return expand(f"{prefix}.norm{{1,2}}.{{weight,bias}}", f"{prefix}.attn.{{q,kv,proj}}.bias", f"{prefix}.mlp.{{0,2}}.bias")


TOKENIZERS = expand("tokenizer.{audio,video}.pos", "tokenizer.{audio,video}.proj.bias")
TOWERS = expand("towers.cls.{audio,video}", "towers.norm.{weight,bias}", "towers.head.bias") | block(
    "towers.blocks.{audio,video}.{0,1}"
)

# What is not decayed, per fusion at the tiny preset (depth 2) with its default options: written out by hand from
# what each parameter is (biases, norms, positional embeddings, learned tokens), never from the code's rule.
NO_DECAY = {
    "late": TOKENIZERS | TOWERS,
    "mid": TOKENIZERS | TOWERS,
    "mbt": TOKENIZERS | TOWERS | {"bottleneck"},
    "early": TOKENIZERS | {"cls"} | expand("norm.{weight,bias}", "head.bias") | block("blocks.{0,1}"),
    "zorro": TOKENIZERS
    | {"fusion_tokens"}
    | block("blocks.{0,1}")
    | expand(
        "norm.{weight,bias}",
        "readout_query.{audio,video,fusion,global}",
        "readout.{q,kv,proj}.bias",
        "out_norm.{audio,video,fusion,global}.{weight,bias}",
        "heads_out.{audio,video,fusion,global}.bias",
    ),
    "deepavfusion": TOKENIZERS
    | {"fusion_tokens"}
    | block("blocks.{audio,video}.{0,1}")
    | expand(
        "fusion.{0,1}.norm_{f,v,a}.{weight,bias}",
        "fusion.{0,1}.attn.aggr_{v,a}.{q,kv,proj}.bias",  # factorized: the two aggregation attentions
        "fusion.{0,1}.attn.{q,k,v,proj}.bias",
        "fusion.{0,1}.norm2.{weight,bias}",
        "fusion.{0,1}.mlp.{0,2}.bias",
        "norms.{audio,video,fusion}.{weight,bias}",
        "heads_out.{audio,video,fusion}.bias",
    ),
}


def test_every_fusion_has_a_no_decay_list():
    assert set(NO_DECAY) == set(list_fusions())


@pytest.mark.parametrize("fusion", sorted(NO_DECAY))
def test_no_decay_group_is_exactly_biases_norms_positions_and_tokens(fusion):
    model = create_model(fusion, 5, "tiny")
    decay, plain = decay_groups(model)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(decay + plain) == sorted(names) and not set(decay) & set(plain)  # a partition, nothing twice
    assert set(plain) == NO_DECAY[fusion], (set(plain) ^ NO_DECAY[fusion])
    # every weight of a Linear/Conv layer (patch projections and heads included) is decayed, and nothing else
    linear = {f"{m}.weight" for m, mod in model.named_modules() if isinstance(mod, (nn.Linear, nn.Conv2d, nn.Conv3d))}
    assert set(decay) == linear
    assert {"tokenizer.audio.proj.weight", "tokenizer.video.proj.weight"} <= set(decay)


def test_decay_groups_by_module_type_not_name():
    class Odd(nn.Module):  # names that a substring rule would misjudge
        def __init__(self) -> None:
            super().__init__()
            self.token_proj = nn.Linear(4, 4)  # a Linear named "token": decayed
            self.cls_conv = nn.Conv1d(4, 4, 3)  # a Conv named "cls": decayed
            self.bn = nn.BatchNorm1d(4)  # 1-d affine of a norm: not decayed
            self.gn = nn.GroupNorm(2, 4)
            self.scale = nn.Parameter(torch.ones(3, 3))  # a 2-d parameter on a plain module: not decayed

    decay, plain = decay_groups(Odd())
    assert set(decay) == {"token_proj.weight", "cls_conv.weight"}
    assert set(plain) == {"token_proj.bias", "cls_conv.bias", "bn.weight", "bn.bias", "gn.weight", "gn.bias", "scale"}


def train_cfg(**overrides):
    cfg = OmegaConf.structured(TrainConfig)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_peak_lr_follows_the_blr_rule():
    # blr off: lr as given, whatever the batch
    assert peak_lr(train_cfg(lr=1e-3), 32) == 1e-3
    # DeepAVFusion fine-tuning: blr 3e-4, 32 per GPU × 4 GPUs × accumulate 4 = 512 → 6e-4
    cfg = train_cfg(lr=1e-3, blr=3e-4, devices=4, accumulate=4)
    assert effective_batch(cfg, 32) == 512
    assert peak_lr(cfg, 32) == pytest.approx(3e-4 * 512 / 256)
    # the same run on one device with accumulate 16: the same effective batch and lr
    assert peak_lr(train_cfg(blr=3e-4, accumulate=16), 32) == pytest.approx(6e-4)
    # batch 32, no accumulation, one device: 16× lower than the old config's 6e-4
    assert peak_lr(train_cfg(blr=3e-4), 32) == pytest.approx(6e-4 / 16)
    task = ClassifyTask(create_model("late", 5, "tiny"), 5, False, train_cfg(blr=3e-4, accumulate=2), batch_size=8)
    assert (task.effective_batch, task.lr) == (16, pytest.approx(3e-4 * 16 / 256))
    with pytest.raises(ValueError, match="batch size"):
        ClassifyTask(create_model("late", 5, "tiny"), 5, False, train_cfg(blr=3e-4))


class RandomClips(torch.utils.data.Dataset):
    """Random tensors at the tiny preset's geometry: the schedule does not depend on what is learnt."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        p = PRESETS["tiny"]
        self.audio = torch.randn(n, 1, *p.audio_shape, generator=g)
        self.video = torch.randn(n, 3, *p.video_shape, generator=g)
        self.label = torch.randint(0, 5, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict:
        return {"audio": self.audio[i], "video": self.video[i], "label": self.label[i]}


class RecordSteps(L.Callback):
    """The lr of every param group at each optimiser step, and the number of training batches seen."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


def closed_form(k: int, total: int, warmup: int) -> float:
    """Optimiser step k (0-based): linear warm-up (k + 1) / warmup, then 0.5 · (1 + cos(π (k − warmup) / (total − warmup)))."""
    return (k + 1) / warmup if k < warmup else 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.parametrize("accumulate", [1, 2])
def test_schedule_per_optimiser_step_in_a_real_fit(accumulate):
    # 5 batches of 4 per epoch, 6 epochs: accumulate 2 → ceil(5 / 2) = 3 optimiser steps per epoch (the epoch's
    # last, half-full accumulation still steps), 18 in all; accumulate 1 → 30.
    epochs, batches, batch_size = 6, 5, 4
    cfg = train_cfg(blr=1e-3, accumulate=accumulate, warmup_frac=0.2, max_epochs=epochs, weight_decay=0.05)
    torch.manual_seed(0)
    task = ClassifyTask(create_model("mbt", 5, "tiny"), 5, False, cfg, batch_size=batch_size)
    record = RecordSteps()
    trainer = L.Trainer(
        max_epochs=epochs, accumulate_grad_batches=accumulate, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=[record],
    )
    loader = torch.utils.data.DataLoader(RandomClips(batches * batch_size), batch_size=batch_size)
    trainer.fit(task, train_dataloaders=loader)
    total = epochs * math.ceil(batches / accumulate)
    assert record.batches == epochs * batches and len(record.lrs) == total  # steps count optimiser steps
    assert trainer.estimated_stepping_batches == total
    peak = 1e-3 * batch_size * accumulate / 256  # blr × effective batch / 256
    warmup = max(1, int(0.2 * total))
    for k, lrs in enumerate(record.lrs):
        assert lrs == [pytest.approx(peak * closed_form(k, total, warmup), rel=1e-9)] * 2, k  # both groups
    assert record.lrs[warmup - 1][0] == pytest.approx(peak)  # the peak at the end of warm-up
    assert record.lrs[-1][0] < 0.02 * peak  # the last step is ~0
    # the optimiser's two groups are decay_groups' (the names travel with the groups), with their weight decay
    groups = trainer.optimizers[0].param_groups
    decay, plain = decay_groups(task.model)
    assert (groups[0]["names"], groups[0]["weight_decay"]) == (decay, 0.05)
    assert (groups[1]["names"], groups[1]["weight_decay"]) == (plain, 0.0)
    params = dict(task.model.named_parameters())
    assert all(p is params[n] for g in groups for p, n in zip(g["params"], g["names"]))


def test_trainer_accumulates_as_configured():
    from fusionbench.config import load_config
    from fusionbench.train import _trainer

    cfg = load_config(["train.accumulate=4", "train.accelerator=cpu"])
    assert _trainer(cfg, []).accumulate_grad_batches == 4


@pytest.mark.slow  # ~13 s: a fresh MLflow store and a real run
def test_run_logs_the_effective_lr_and_batch(tiny_synth_root, tmp_path):
    """A real tiny fit through ``train.run``: MLflow holds train/lr_effective = blr × effective batch / 256."""
    from fusionbench import tracking
    from fusionbench.config import load_config
    from fusionbench.train import run

    threads = torch.get_num_threads()
    cfg = load_config([
        "preset=tiny", "fusion=early", f"data.root={tiny_synth_root}", "data.synth.num_clips=40",
        f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=8", "train.max_epochs=1", "train.accelerator=cpu",
        "train.blr=0.002", "train.accumulate=2", "train.progress=false", f"tracking.store={tmp_path / 'mlflow.db'}",
    ])
    try:
        metrics = tracking.client(cfg.tracking.store).get_run(run(cfg)).data.metrics
    finally:
        torch.set_num_threads(threads)
    assert metrics["train/effective_batch"] == 16
    assert metrics["train/lr_effective"] == pytest.approx(0.002 * 16 / 256)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.parametrize("precision, fused", [("32-true", True), ("bf16-mixed", False)])
def test_both_tasks_step_a_fused_adamw_except_under_mixed_precision(precision, fused):
    # The supervised and the pretraining task build one optimiser (adamw_warmup_cosine): fused (one kernel for every
    # parameter) in full precision; under mixed precision Lightning refuses to clip a fused optimiser's gradients.
    from fusionbench.config import PretrainConfig
    from fusionbench.tasks.contrastive import ContrastiveTask

    cfg = train_cfg(precision=precision)
    tasks = [
        ClassifyTask(create_model("late", 5, "tiny"), 5, False, cfg, batch_size=4),
        ContrastiveTask(create_model("zorro", 5, "tiny"), OmegaConf.structured(PretrainConfig), cfg, batch_size=4),
    ]
    for task in tasks:
        trainer = L.Trainer(
            max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0,
        )
        trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(RandomClips(4), batch_size=4))
        assert bool(trainer.optimizers[0].defaults["fused"]) is fused, type(task).__name__
