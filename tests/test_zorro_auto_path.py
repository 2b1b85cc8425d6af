"""Zorro's automatic path choice: ``forward`` runs the structured routing from ``STRUCTURED_MIN_TOKENS`` tokens up and
the dense masked reference below, and the two give the same outputs and gradients on each side of the threshold."""
import pytest
import torch

from fusionbench.fusions.zorro import Zorro
from fusionbench.registry import create_model

THRESHOLD = Zorro.STRUCTURED_MIN_TOKENS
FUSION_TOKENS = 4


def model_with(num_tokens: int) -> Zorro:
    """A tiny Zorro whose sequence is ``num_tokens`` long (A and V tokens of 8 × 2 and 1 × 4 × 4 patches + F)."""
    n_a = (num_tokens - FUSION_TOKENS) // 2
    n_v = num_tokens - FUSION_TOKENS - n_a
    torch.manual_seed(0)
    model = create_model("zorro", 5, "tiny", num_fusion_tokens=FUSION_TOKENS, audio_shape=(8, 2 * n_a),
                         audio_patch=(8, 2), video_shape=(n_v, 4, 4), video_patch=(1, 4, 4)).eval()
    with torch.no_grad():  # the zero-initialised heads would hide differences
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.5)
    assert model.num_audio_tokens + model.num_video_tokens + FUSION_TOKENS == num_tokens
    return model


def clip(model: Zorro, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(2, 1, *model.tokenizer.audio.audio_shape, generator=g)  # (B, 1, n_mels, L)
    video = torch.randn(2, 3, *model.tokenizer.video.video_shape, generator=g)  # (B, 3, T, H, W)
    return {"audio": audio, "video": video}


def paths_run(model: Zorro, monkeypatch, **x) -> list[str]:
    """Which of the two implementations ``forward`` ran (spied, still computed)."""
    ran = []
    for name in ("_pooled_structured", "_pooled_masked"):
        real = getattr(model, name)
        monkeypatch.setattr(model, name, lambda groups, real=real, name=name: ran.append(name) or real(groups))
    model(**x)
    return ran


def test_the_threshold_is_a_sequence_length_within_the_benchmarked_range():
    assert 2 * 32 + 16 < THRESHOLD <= 2 * 64 + 16  # perf.py: masked faster at 48 and 80 tokens, structured from 144


@pytest.mark.parametrize("num_tokens, expected", [(THRESHOLD - 1, "_pooled_masked"),
                                                  (THRESHOLD, "_pooled_structured")])
def test_forward_picks_the_masked_path_below_the_threshold_and_the_structured_one_from_it(
        num_tokens, expected, monkeypatch):
    model = model_with(num_tokens)
    assert paths_run(model, monkeypatch, **clip(model)) == [expected]


def test_a_missing_modality_counts_only_the_tokens_present(monkeypatch):
    model = model_with(THRESHOLD + 2)  # A + V + F ≥ threshold; A + F alone is below it
    x = clip(model)
    assert paths_run(model, monkeypatch, **x) == ["_pooled_structured"]
    assert paths_run(model, monkeypatch, audio=x["audio"]) == ["_pooled_masked"]


@pytest.mark.parametrize("num_tokens", [THRESHOLD - 1, THRESHOLD])
def test_both_paths_and_the_automatic_one_give_the_same_outputs_and_gradients(num_tokens):
    model = model_with(num_tokens)
    x = clip(model, seed=1)
    outs, grads = {}, {}
    for path in ("forward", "forward_structured", "forward_masked"):
        model.zero_grad(set_to_none=True)
        out = getattr(model, path)(**x)
        sum(s.square().sum() for s in out.streams.values()).backward()
        outs[path] = out
        grads[path] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for path in ("forward", "forward_masked"):
        assert outs[path].streams.keys() == outs["forward_structured"].streams.keys()
        for name, s in outs[path].streams.items():
            torch.testing.assert_close(s, outs["forward_structured"].streams[name], atol=1e-5, rtol=0)
        assert grads[path].keys() == grads["forward_structured"].keys()
        for name, g in grads[path].items():
            torch.testing.assert_close(g, grads["forward_structured"][name], atol=1e-4, rtol=1e-4)
    embedded = model.embed(**x)  # embed takes the same automatic path
    torch.testing.assert_close(embedded["global"], model.out_norm["global"](
        model._pooled_structured(model._groups(x["audio"], x["video"]))["global"]), atol=1e-5, rtol=0)


def test_the_paths_agree_in_training_with_stochastic_depth():
    model = create_model("zorro", 5, "tiny", num_fusion_tokens=FUSION_TOKENS, drop_path=0.5).train()
    x = clip(model, seed=2)
    outs = []
    for path in ("forward_structured", "forward_masked"):
        torch.manual_seed(3)  # the same draws: one per example, layer and branch, on both paths
        outs.append(getattr(model, path)(**x).streams["global"])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    torch.manual_seed(4)
    assert not torch.allclose(model.forward_structured(**x).streams["global"], outs[0])  # the depth is random


@pytest.mark.parametrize("backward", [False, True])
def test_the_structured_path_runs_the_flops_the_routing_needs_and_the_readouts_masked_pairs(backward):
    from fusionbench.evaluate.profile import count_flops

    above, below = model_with(THRESHOLD), model_with(THRESHOLD - 1)
    # above the threshold forward runs the structured path: the dense count less every masked pair of the backbone;
    # the one masked readout call still discards its 2·N pairs (audio misses V and F, video A and F, fusion A and V)
    effective = count_flops(above, backward=backward, dense=True, effective=True)
    readout_pairs = 2 * THRESHOLD
    per_pair = (14 if backward else 4) * above.dim  # 4·d_h per head forward (QKᵀ and AV), 3.5× that with backward
    runs = count_flops(above, backward=backward)
    assert runs == effective + per_pair * readout_pairs < count_flops(above, backward=backward, dense=True)
    assert count_flops(above, backward=backward, effective=True) == effective  # its masked pairs are the readout's
    # below it, the masked path: the dense count
    assert count_flops(below, backward=backward) == count_flops(below, backward=backward, dense=True)
