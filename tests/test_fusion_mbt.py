"""MBT: Lf = L is late fusion, nothing crosses below Lf, the bottleneck average is the paper's loop."""
import pytest
import torch

from fusionbench.registry import PRESETS, create_model


def inputs(seed: int = 0, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = PRESETS["tiny"]
    audio, video = torch.randn(2, 1, *p.audio_shape, generator=g), torch.randn(2, 3, *p.video_shape, generator=g)
    x = {"audio": audio, "video": video}
    return {m: t.requires_grad_(requires_grad) for m, t in x.items()}


def randomized(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, 5, "tiny", **overrides)
    with torch.no_grad():  # zero-initialised CLS and head would hide dependencies
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.5)
    return model


def test_fusion_layer_equal_depth_is_late_fusion_with_the_same_weights():
    late = randomized("late")
    depth = PRESETS["tiny"].depth
    mbt = create_model("mbt", 5, "tiny", fusion_layer=depth)
    missing, unexpected = mbt.load_state_dict(late.state_dict(), strict=False)
    assert missing == ["bottleneck"] and unexpected == []
    x = inputs()
    with torch.no_grad():
        ours, theirs = mbt(**x), late(**x)
        assert torch.equal(ours.logits, theirs.logits)
        assert all(torch.equal(ours.streams[m], theirs.streams[m]) for m in theirs.streams)
        fused = create_model("mbt", 5, "tiny", fusion_layer=0)  # the check can fail: fusion changes the output
        fused.load_state_dict(mbt.state_dict())
        assert not torch.allclose(fused(**x).logits, theirs.logits)


@pytest.mark.parametrize("drop", ["audio", "video"])
def test_unimodal_is_the_tower_without_bottlenecks(drop):
    mbt = randomized("mbt", fusion_layer=0)
    late = create_model("late", 5, "tiny")
    late.load_state_dict(mbt.state_dict(), strict=False)
    x = {m: t for m, t in inputs().items() if m != drop}
    with torch.no_grad():
        assert torch.equal(mbt(**x).logits, late(**x).logits)


def capture_block_outputs(model, modality: str) -> dict[int, torch.Tensor]:
    outs: dict[int, torch.Tensor] = {}
    for layer, block in enumerate(model.towers.blocks[modality]):
        block.register_forward_hook(lambda mod, inp, out, layer=layer: outs.__setitem__(layer, out))
    return outs


def grad_or_none(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))  # no cancellation by a plain sum
    return torch.autograd.grad((y * probe).sum(), x, retain_graph=True, allow_unused=True)[0]


@pytest.mark.parametrize("kept, other", [("audio", "video"), ("video", "audio")])
def test_no_gradient_crosses_modalities_below_the_fusion_layer(kept, other):
    # depth 4, Lf = 2: layers 0-1 unimodal; layer 2 fuses into b only (towers read the initial b);
    # layer 3 reads the averaged b, so the cross-modal gradient first appears in layer 3's output.
    model = randomized("mbt", depth=4, fusion_layer=2)
    outs = capture_block_outputs(model, kept)
    x = inputs(1, requires_grad=True)
    model(**x)
    for layer in (0, 1):
        g = grad_or_none(outs[layer], x[other])
        assert g is None or torch.count_nonzero(g) == 0, f"layer {layer} < Lf saw {other}"
        assert torch.count_nonzero(grad_or_none(outs[layer], x[kept])) > 0
    n_tokens = model.num_audio_tokens + 1 if kept == "audio" else model.num_video_tokens + 1
    g = grad_or_none(outs[2][:, :n_tokens], x[other])
    assert g is None or torch.count_nonzero(g) == 0  # layer Lf's modality tokens read the initial bottleneck only
    assert torch.count_nonzero(grad_or_none(outs[3], x[other])) > 0  # the check can fail


def naive_mbt(model, audio: torch.Tensor, video: torch.Tensor) -> dict[str, torch.Tensor]:
    """The paper's loop, written out: per fusion layer, each tower on [z_m ‖ b], then b = (b̂_a + b̂_v) / 2."""
    t = model.towers
    z_a = t.with_cls("audio", model.tokenizer.audio(audio))
    z_v = t.with_cls("video", model.tokenizer.video(video))
    b = model.bottleneck.repeat(audio.shape[0], 1, 1)
    n_b = b.shape[1]
    for layer in range(model.depth):
        if layer < model.fusion_layer:
            z_a, z_v = t.blocks["audio"][layer](z_a), t.blocks["video"][layer](z_v)
            continue
        y_a = t.blocks["audio"][layer](torch.cat([z_a, b], 1))
        y_v = t.blocks["video"][layer](torch.cat([z_v, b], 1))
        z_a, b_a = y_a[:, :-n_b], y_a[:, -n_b:]
        z_v, b_v = y_v[:, :-n_b], y_v[:, -n_b:]
        b = (b_a + b_v) / 2
    return {"audio": t.readout("audio", z_a), "video": t.readout("video", z_v)}


@pytest.mark.parametrize("plus_one, n_tokens", [(True, 5), (False, 4)])
def test_bottleneck_averaging_matches_the_naive_loop(plus_one, n_tokens):
    model = randomized("mbt", depth=3, fusion_layer=0, bottleneck_plus_one=plus_one)
    assert model.bottleneck.shape[1] == n_tokens  # B = 4, + 1 with the CLS head as in scenic
    x = inputs(2)
    with torch.no_grad():
        out, ref = model(**x), naive_mbt(model, **x)
    for m in ("audio", "video"):
        torch.testing.assert_close(out.streams[m], ref[m], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logits, (ref["audio"] + ref["video"]) / 2, atol=1e-6, rtol=0)


def test_fusion_layer_default_and_range():
    assert create_model("mbt", 5, "small").fusion_layer == 2 * PRESETS["small"].depth // 3
    with pytest.raises(ValueError, match="fusion_layer"):
        create_model("mbt", 5, "tiny", fusion_layer=PRESETS["tiny"].depth + 1)
