"""Smoke test of every config under experiments/ (``make smoke``): no config may rot.

For every YAML file under experiments/ (found by a glob, so a new file is covered without editing this test):

1. it loads and validates through ``load_config`` and its model is built at the config's own preset, on the
   geometry of its own data config, as ``fusionbench.train.build`` does (paper configs: ViT-B, built on the meta
   device, never run);
2. a sweep file's ``sweep:`` grid expands, and every cell validates (``fusionbench.sweep.plan``) and builds;
3. its options run for real at ``preset=tiny``: one Lightning fit + test through ``fusionbench.train.run`` on the
   tiny synthetic set of tests/conftest.py (28 train / 6 val / 6 test clips, batch 16: 2 + 1 + 1 batches per
   condition), recorded in one MLflow store shared by the module.

Everything but the run's size is the config's own, except the geometry, which cannot carry over to the tiny
synthetic grid (see ``tiny_overrides``).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY_SYNTH_CLIPS
from fusionbench import tracking
from fusionbench.cli import grid_from_experiment
from fusionbench.config import EXPERIMENTS, DataConfig, load_config
from fusionbench.data.features import AudioFeatures
from fusionbench.data.synthetic import TASKS
from fusionbench.registry import PRESETS, create_model
from fusionbench.sweep import expand_grids, plan
from fusionbench.train import run

CONFIGS = sorted(EXPERIMENTS.rglob("*.yaml"))
SWEEPS = [p for p in CONFIGS if "sweep" in (OmegaConf.to_container(OmegaConf.load(p)) or {})]
TINY = PRESETS["tiny"]

# 6 test clips cannot hold all 16 classes: the metrics skip the absent ones, and say so on every run.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Average precision score for one or more classes was `nan`"),
    pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true"),
]


def _id(path: Path) -> str:
    return path.relative_to(EXPERIMENTS).with_suffix("").as_posix()


def test_the_glob_finds_every_kind_of_config():
    names = {_id(p) for p in CONFIGS}
    assert {"defaults", "benchmark"} <= names
    assert any(n.startswith("fusion/") for n in names) and any(n.startswith("paper/") for n in names)
    assert "benchmark" in {_id(p) for p in SWEEPS}


def _build(cfg, preset: str | None = None) -> torch.nn.Module:
    """The model as ``fusionbench.train.build`` makes it: the data config's geometry, then ``cfg.model``."""
    if cfg.data.dataset != "synth":
        pytest.skip("needs the config's own clips.csv")
    geometry = {
        "audio_shape": AudioFeatures(cfg.data.audio).shape,
        "video_shape": (cfg.data.video.num_frames, cfg.data.video.size, cfg.data.video.size),
    }
    num_classes = TASKS[cfg.data.task].num_classes
    return create_model(cfg.fusion, num_classes, preset or cfg.preset, **{**geometry, **cfg.model})


# ------------------------------------------------------------------------------------- 1. load, validate, build


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_loads_and_builds(path: Path):
    cfg = load_config([], experiment=path)
    assert "sweep" not in cfg
    # ViT-B (the paper configs, 90-300 M parameters) on the meta device: the constructor and every shape, without
    # ~1-4 s of weight init per config (the same init code runs for real in the tiny fit below); never a forward.
    with torch.device("meta" if cfg.preset == "base" else "cpu"):
        model = _build(cfg)
    assert (model.dim, model.depth) == (PRESETS[cfg.preset].dim, PRESETS[cfg.preset].depth)
    assert model.num_audio_tokens > 0 and model.num_video_tokens > 0
    assert sum(p.numel() for p in model.parameters()) > 0


# ------------------------------------------------------------------------------------------ 2. sweep grids


@pytest.mark.parametrize("path", SWEEPS, ids=_id)
def test_every_sweep_cell_validates_and_builds(path: Path):
    sweep = OmegaConf.to_container(OmegaConf.load(path))["sweep"]
    blocks = sweep if isinstance(sweep, list) else [sweep]  # one grid, or a list whose union is swept
    cells = expand_grids(grid_from_experiment(str(path), []))
    assert len(cells) == sum(math.prod(len(v) if isinstance(v, list) else 1 for v in b.values()) for b in blocks)
    planned = plan(cells, path)  # load_config on every cell; raises ConfigError naming the cell
    assert len(planned) == len(cells), "two cells of the grid are the same run"
    built = set()
    for cell in planned:  # each distinct model once, on the meta device (no memory, no init cost)
        key = OmegaConf.to_yaml(cell.cfg.model) + cell.cfg.fusion + cell.cfg.preset + cell.cfg.data.task
        if key not in built:
            with torch.device("meta"):
                _build(cell.cfg)
            built.add(key)


# ---------------------------------------------------------------------------------------- 3. one tiny run


@pytest.fixture(scope="module")
def smoke_env(tiny_synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Run-size overrides shared by every tiny run: conftest's session synthetic set, one cache, one MLflow store."""
    tmp = tmp_path_factory.mktemp("smoke")
    return [
        "preset=tiny",
        "data.dataset=synth",
        "data.manifest=''",
        f"data.root={tiny_synth_root}",
        f"data.synth.num_clips={TINY_SYNTH_CLIPS}",
        f"data.cache_dir={tmp / 'cache'}",
        "data.batch_size=16",
        "data.num_workers=0",
        "train.max_epochs=1",
        "train.max_steps=-1",
        "train.accelerator=cpu",
        "train.devices=1",
        "train.strategy=auto",
        "train.precision=32-true",
        "train.progress=false",
        f"tracking.store={tmp / 'mlflow.db'}",
        "tracking.experiment=smoke",
    ]


# The synthetic set and the tiny preset's token grid: schema defaults (DataConfig) = the generator's geometry.
_DATA = OmegaConf.structured(DataConfig)
DATA_GEOMETRY = (
    "clip_seconds", "audio.sample_rate", "audio.num_mel_bins", "audio.frame_length_ms", "audio.frame_shift_ms",
    "audio.target_length", "video.num_frames", "video.size",
)
MODEL_GEOMETRY = ("audio_shape", "audio_patch", "video_shape", "video_patch")


def _scaled_layers(spec, depth: int):
    """A layer index (or list, or DeepAVFusion's '0-4-8') at ``depth`` → the same relative place at tiny's depth."""
    if spec is None or spec in ("all", "none"):
        return spec
    if isinstance(spec, str):
        spec = spec.split("-")
    items = [spec] if isinstance(spec, int) else spec
    scaled = sorted({int(layer) * TINY.depth // depth for layer in items})
    return scaled[0] if isinstance(spec, int) else scaled


def tiny_overrides(cfg) -> list[str]:
    """What the tiny run replaces in a config, and only that (everything else is the config's own).

    - data geometry (clip_seconds, fbank size and hop, frames, frame size) → the synthetic defaults: the paper
      configs ask for 8-10 s of 128-mel fbank and 224² frames, and the synthetic set is generated on the data
      config's grid, so keeping them would generate and decode a ViT-B-sized set per config (and run a big model);
    - model.audio_shape / video_shape, if set (they would win over the data's shapes) → the tiny preset's, which
      equal the synthetic geometry; model.audio_patch / video_patch (the papers' 16×16, sized for 128-mel and 224²
      inputs) → the tiny preset's one-token-per-125-ms patches that time-align audio and video tokens;
    - depth-relative layer indices (model.fusion_layer of mbt/mid, model.fusion_layers of deepavfusion) → scaled
      from the config's preset depth to tiny's 2 layers (MBT's Lf = 8 of 12 → 1 of 2; 8 would be out of range).
    """
    out = [f"data.{key}={OmegaConf.select(_DATA, key)}" for key in DATA_GEOMETRY]
    for key in MODEL_GEOMETRY:
        if key in cfg.model:
            out.append(f"model.{key}={list(getattr(TINY, key))}")
    depth = PRESETS[cfg.preset].depth
    for key in ("fusion_layer", "fusion_layers"):
        if key in cfg.model and cfg.model[key] not in (None, "all", "none"):
            out.append(f"model.{key}={_scaled_layers(OmegaConf.to_object(cfg.model)[key], depth)}")
    return out


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """``run`` sets torch's thread count from train.threads (benchmark.yaml: 1): give the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_runs_one_tiny_fit(path: Path, smoke_env: list[str]):
    own = load_config([], experiment=path)
    replaced = tiny_overrides(own)
    cfg = load_config([*smoke_env, *replaced], experiment=path)
    # The config's own fusion options all reach the tiny model; only the replaced geometry keys differ.
    replaced_model = {o.split("=", 1)[0].removeprefix("model.") for o in replaced if o.startswith("model.")}
    assert set(cfg.model) == set(own.model)
    assert {k: v for k, v in cfg.model.items() if k not in replaced_model} == {
        k: v for k, v in own.model.items() if k not in replaced_model
    }
    assert (cfg.fusion, list(cfg.eval.conditions)) == (own.fusion, list(own.eval.conditions))

    run_id = run(cfg)

    record = tracking.client(cfg.tracking.store).get_run(run_id)
    assert record.info.status == "FINISHED"
    metrics = record.data.metrics
    assert 0 < metrics["data/train_clips"] <= TINY_SYNTH_CLIPS and metrics["model/params"] > 0
    for condition in cfg.eval.conditions:
        top1 = metrics[f"test/{condition}/top1"]
        assert 0 <= top1 <= 1, (condition, top1)
    assert math.isfinite(metrics["train/loss"])
