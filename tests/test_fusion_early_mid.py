"""Early and mid fusion: cross-modal gradients exist exactly where the attention crosses."""
import pytest
import torch

from fusionbench.registry import PRESETS, create_model


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = PRESETS["tiny"]
    return {
        "audio": torch.randn(2, 1, *p.audio_shape, generator=g).requires_grad_(),
        "video": torch.randn(2, 3, *p.video_shape, generator=g).requires_grad_(),
    }


def grad_or_none(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))  # no cancellation by a plain sum
    return torch.autograd.grad((y * probe).sum(), x, retain_graph=True, allow_unused=True)[0]


def crosses(y: torch.Tensor, x: torch.Tensor) -> bool:
    g = grad_or_none(y, x)
    return g is not None and torch.count_nonzero(g) > 0


def hook_outputs(blocks) -> dict[int, torch.Tensor]:
    outs: dict[int, torch.Tensor] = {}
    for layer, block in enumerate(blocks):
        block.register_forward_hook(lambda mod, inp, out, layer=layer: outs.__setitem__(layer, out))
    return outs


def test_early_fusion_crosses_from_layer_zero():
    torch.manual_seed(0)
    model = create_model("early", 5, "tiny")
    outs = hook_outputs(model.blocks)
    x = inputs()
    model(**x)
    n_a = model.num_audio_tokens
    audio_tokens, video_tokens = outs[0][:, 1 : 1 + n_a], outs[0][:, 1 + n_a :]  # after [CLS ‖ A ‖ V]
    assert crosses(audio_tokens, x["video"]) and crosses(video_tokens, x["audio"])


def test_early_fusion_unimodal_drops_the_absent_tokens():
    torch.manual_seed(0)
    model = create_model("early", 5, "tiny")
    outs = hook_outputs(model.blocks)
    model(audio=inputs()["audio"])
    assert outs[0].shape[1] == 1 + model.num_audio_tokens


@pytest.mark.parametrize("kept, other", [("audio", "video"), ("video", "audio")])
def test_mid_fusion_is_unimodal_below_lf_and_crosses_from_lf(kept, other):
    torch.manual_seed(0)
    model = create_model("mid", 5, "tiny", depth=4, fusion_layer=2)
    outs = hook_outputs(model.towers.blocks[kept])
    x = inputs(1)
    model(**x)
    for layer in (0, 1):
        assert not crosses(outs[layer], x[other]), f"layer {layer} < Lf saw {other}"
        assert crosses(outs[layer], x[kept])
    for layer in (2, 3):
        assert crosses(outs[layer], x[other]), f"layer {layer} >= Lf did not see {other}"


def test_mid_fusion_unimodal_is_the_tower_alone():
    torch.manual_seed(0)
    mid = create_model("mid", 5, "tiny", fusion_layer=0)
    late = create_model("late", 5, "tiny")
    late.load_state_dict(mid.state_dict())
    with torch.no_grad():
        for m, x in inputs().items():
            assert torch.equal(mid(**{m: x}).logits, late(**{m: x}).logits)
