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
