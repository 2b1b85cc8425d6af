"""Fusion config fragments and paper configs: they validate, build, and give the papers' token counts."""
from pathlib import Path

import pytest
import torch

from fusionbench.config import EXPERIMENTS, load_config
from fusionbench.registry import create_model, list_fusions

FRAGMENTS = sorted((EXPERIMENTS / "fusion").glob("*.yaml"))
PAPERS = sorted((EXPERIMENTS / "paper").glob("*.yaml"))


def build(cfg, preset: str) -> torch.nn.Module:
    """As fusionbench.train does: geometry from the data config, then the fusion's options."""
    geometry = {
        "audio_shape": (cfg.data.audio.num_mel_bins, cfg.data.audio.target_length),
        "video_shape": (cfg.data.video.num_frames, cfg.data.video.size, cfg.data.video.size),
    }
    with torch.device("meta"):  # no memory, no init cost: the base preset is ~100-300 M parameters
        return create_model(cfg.fusion, 10, preset, **{**geometry, **cfg.model})


def test_every_fusion_has_a_config_fragment():
    assert {p.stem for p in FRAGMENTS} == set(list_fusions())


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: p.stem)
def test_fragment_validates_and_builds(path: Path):
    cfg = load_config(experiment=path)
    assert cfg.fusion == path.stem
    build(cfg, "small")


# The papers' token counts (methods.md): (video, audio, extra shared tokens)
PAPER_TOKENS = {
    "mbt": (1568, 400, 5),  # 8 × 14 × 14; 8 × 50; B = 4 (+ 1 with the CLS head)
    "late": (1568, 400, 0),
    "zorro": (1568, 512, 16),
    "deepavfusion": (196, 96, 32),  # 14 × 14; 8 × 12; (16, 8, 8)
}


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_paper_config_validates_and_has_the_papers_tokens(path: Path):
    cfg = load_config(experiment=path)
    assert cfg.fusion == path.stem and cfg.preset == "base"
    model = build(cfg, cfg.preset)
    n_video, n_audio, n_extra = PAPER_TOKENS[path.stem]
    assert (model.num_video_tokens, model.num_audio_tokens) == (n_video, n_audio)
    extra = {"mbt": "bottleneck", "zorro": "fusion_tokens", "deepavfusion": "fusion_tokens"}.get(path.stem)
    assert (getattr(model, extra).shape[1] if extra else 0) == n_extra
    assert (model.dim, model.depth, model.heads) == (768, 12, 12)


def paper(name: str):
    return load_config(experiment=EXPERIMENTS / "paper" / f"{name}.yaml")


def test_zorro_late_and_mbt_share_the_training_recipe():
    from omegaconf import OmegaConf

    cfgs = {name: paper(name) for name in ("mbt", "late", "zorro")}
    train = {name: OmegaConf.to_container(cfg.train) for name, cfg in cfgs.items()}
    assert train["zorro"] == train["mbt"] == train["late"]
    for key in ("drop_path", "head_init"):
        assert cfgs["zorro"].model[key] == cfgs["mbt"].model[key] == cfgs["late"].model[key], key
    # the data differ exactly where zorro.yaml says they do
    flat = {name: _flatten(OmegaConf.to_container(cfg.data)) for name, cfg in cfgs.items()}
    assert flat["late"] == flat["mbt"]
    differ = {k for k in flat["mbt"] if flat["mbt"][k] != flat["zorro"][k]}
    assert differ == {"clip_seconds", "audio.target_length", "video.mean", "video.std"}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_deepavfusion_lr_follows_the_blr_rule():
    from omegaconf import OmegaConf

    from fusionbench.tasks.classify import effective_batch, peak_lr

    cfg = paper("deepavfusion")
    assert (cfg.train.blr, cfg.train.accumulate, cfg.data.batch_size) == (3e-4, 4, 32)
    assert peak_lr(cfg.train, cfg.data.batch_size) == pytest.approx(3e-4 * 128 / 256)  # as written: one device
    on_four = OmegaConf.merge(cfg.train, {"devices": 4})  # the paper's 4 GPUs: 32 × 4 × 4 = 512 → 6e-4
    assert effective_batch(on_four, 32) == 512 and peak_lr(on_four, 32) == pytest.approx(6e-4)
    one_device = OmegaConf.merge(cfg.train, {"accumulate": 16})
    assert peak_lr(one_device, 32) == pytest.approx(6e-4)
