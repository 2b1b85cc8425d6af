"""Routing rules of the two-tower fusions that no other test pins: late / mid / MBT classify from the CLS token; mid
fusion updates both towers from the previous layer's tokens (an independent naive loop); what MBT's fusion layer lets
reach the CLS tokens (Lf = depth and depth − 1: nothing cross-modal; depth − 2: it does)."""
from __future__ import annotations

import pytest
import torch

from fusionbench.registry import PRESETS, create_model


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = PRESETS["tiny"]
    return {"audio": torch.randn(2, 1, *p.audio_shape, generator=g), "video": torch.randn(2, 3, *p.video_shape, generator=g)}


def randomized(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, 5, "tiny", **overrides)
    with torch.no_grad():  # zero-initialised CLS tokens would make token 0 indistinguishable from a constant
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize("fusion", ["late", "mid", "mbt"])
def test_streams_read_the_cls_token_of_the_final_tokens(fusion):
    model = randomized(fusion)
    towers = model.towers
    first_in, last_out = {}, {}
    for m in ("audio", "video"):
        towers.blocks[m][0].register_forward_pre_hook(lambda mod, args, m=m: first_in.__setitem__(m, args[0]))
        towers.blocks[m][-1].register_forward_hook(lambda mod, args, out, m=m: last_out.__setitem__(m, out))
    with torch.no_grad():
        out = model(**inputs())
        for m in ("audio", "video"):
            # token 0 entering the first block is the learned CLS (no positional embedding, no patch)
            torch.testing.assert_close(first_in[m][:, 0], towers.cls[m][0].expand(2, -1), rtol=0, atol=0)
            n = 1 + (model.num_audio_tokens if m == "audio" else model.num_video_tokens)
            assert last_out[m].shape[1] >= n  # MBT's fusion layer appends the bottlenecks after the tokens
            by_hand = towers.head(towers.norm(last_out[m][:, 0]))  # shared LN + shared head on token 0
            torch.testing.assert_close(out.streams[m], by_hand, rtol=0, atol=1e-6)
            patch = towers.head(towers.norm(last_out[m][:, 1]))  # the check can fail: a patch token differs
            assert not torch.allclose(out.streams[m], patch, atol=1e-3)
        torch.testing.assert_close(out.logits, (out.streams["audio"] + out.streams["video"]) / 2)


def naive_mid(model, audio: torch.Tensor, video: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mid fusion as the scenic code writes it: from Lf each tower runs its FULL block over [A ‖ V] (the previous
    layer's tokens of both) and keeps its own slice; both towers are updated from the same previous tokens."""
    t = model.towers
    z = {"audio": t.with_cls("audio", model.tokenizer.audio(audio)), "video": t.with_cls("video", model.tokenizer.video(video))}
    n_a = z["audio"].shape[1]
    for layer in range(model.depth):
        if layer < model.fusion_layer:
            z = {m: t.blocks[m][layer](x) for m, x in z.items()}
            continue
        both = torch.cat([z["audio"], z["video"]], dim=1)  # previous layer's tokens, (B, 2 + N_a + N_v, D)
        new_a = t.blocks["audio"][layer](both)[:, :n_a]
        new_v = t.blocks["video"][layer](both)[:, n_a:]
        z = {"audio": new_a, "video": new_v}
    return {m: t.readout(m, x) for m, x in z.items()}


@pytest.mark.parametrize("fusion_layer", [0, 1])
def test_mid_fusion_matches_the_naive_parallel_loop(fusion_layer):
    model = randomized("mid", depth=3, fusion_layer=fusion_layer)
    x = inputs(1)
    with torch.no_grad():
        out, ref = model(**x), naive_mid(model, **x)
    for m in ("audio", "video"):
        torch.testing.assert_close(out.streams[m], ref[m], atol=1e-5, rtol=1e-5)


def test_mbt_lf_depth_minus_one_lets_no_cross_modal_information_reach_the_cls():
    depth = PRESETS["tiny"].depth
    for lf in (depth, depth - 1):
        model = randomized("mbt", fusion_layer=lf)
        one, other_audio, other_video = inputs(1), inputs(2), inputs(3)
        with torch.no_grad():
            base = model(**one)
            audio_changed = model(audio=other_audio["audio"], video=one["video"])
            video_changed = model(audio=one["audio"], video=other_video["video"])
        assert torch.equal(base.streams["video"], audio_changed.streams["video"]), lf  # video CLS never read audio
        assert torch.equal(base.streams["audio"], video_changed.streams["audio"]), lf
        assert not torch.allclose(base.streams["audio"], audio_changed.streams["audio"])  # the check can fail
    # Lf = depth − 1 is still not late fusion: the last layer's tokens also attend over the learned bottlenecks
    mbt = randomized("mbt", fusion_layer=depth - 1)
    late = create_model("late", 5, "tiny").eval()
    late.load_state_dict(mbt.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(mbt(**inputs(1)).logits, late(**inputs(1)).logits, atol=1e-4)
    # Lf = depth − 2: the averaged bottlenecks are read at layer depth − 1, and audio reaches the video CLS
    model = randomized("mbt", fusion_layer=depth - 2)
    with torch.no_grad():
        a = model(**inputs(1)).streams["video"]
        b = model(audio=inputs(2)["audio"], video=inputs(1)["video"]).streams["video"]
    assert not torch.allclose(a, b, atol=1e-5)
