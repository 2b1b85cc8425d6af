"""``patch_embed`` and ``pos_init_std`` are shared by every fusion: a frozen patch projection keeps its random init
through training while the positions learn; the positions start at the asked σ; bad values fail at construction."""
import pytest
import torch
import torch.nn.functional as F

from fusionbench.registry import create_model, list_fusions


def _train_step(model) -> None:
    torch.manual_seed(1)
    tok = model.tokenizer
    audio, video = torch.randn(4, 1, *tok.audio.audio_shape), torch.randn(4, 3, *tok.video.video_shape)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.loss(model(audio=audio, video=video), torch.tensor([0, 1, 2, 0]), F.cross_entropy).backward()
    optimizer.step()


@pytest.mark.parametrize("name", list_fusions())
@pytest.mark.parametrize("patch_embed", ["learned", "frozen"])
def test_frozen_patch_projection_keeps_its_init_and_positions_learn(name, patch_embed):
    torch.manual_seed(0)
    model = create_model(name, 3, "tiny", patch_embed=patch_embed).train()
    tok = model.tokenizer
    before = {k: v.detach().clone() for k, v in tok.state_dict().items()}
    _train_step(model)
    after = tok.state_dict()
    for key in ("audio.proj.weight", "audio.proj.bias", "video.proj.weight", "video.proj.bias"):
        same = torch.equal(before[key], after[key])
        assert same == (patch_embed == "frozen"), f"{key}: {'changed' if not same else 'unchanged'} with {patch_embed}"
    for key in ("audio.pos", "video.pos"):
        assert not torch.equal(before[key], after[key]), f"{key} did not learn with patch_embed={patch_embed}"


def test_pos_init_std_sets_the_positions_spread():
    torch.manual_seed(0)
    default, wide = create_model("early", 3, "small"), create_model("early", 3, "small", pos_init_std=1.0)
    # the cut is ±2 absolute (timm's): σ 0.02 is not truncated; σ 1 is cut at ±2σ, which leaves a spread of 0.88σ
    for model, spread in ((default, 0.02), (wide, 0.88)):
        for pos in (model.tokenizer.audio.pos, model.tokenizer.video.pos):
            assert pos.std().item() == pytest.approx(spread, rel=0.05)
            assert pos.abs().max().item() <= 2.0


@pytest.mark.parametrize("bad, match", [({"patch_embed": "fixed"}, "patch_embed"), ({"pos_init_std": 0.0}, "pos_init_std")])
def test_bad_options_fail_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        create_model("late", 3, "tiny", **bad)
