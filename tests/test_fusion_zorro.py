"""Zorro: the masks route as the paper says, the modality readouts are pure, structured == dense masked."""
import pytest
import torch

from fusionbench.fusions.zorro import readout_mask, zorro_mask
from fusionbench.nn.masks import TokenType, token_types
from fusionbench.registry import PRESETS, create_model

A, V, F, G = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION, TokenType.GLOBAL
OTHER = {"audio": "video", "video": "audio"}


def inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = PRESETS["tiny"]
    audio, video = torch.randn(2, 1, *p.audio_shape, generator=g), torch.randn(2, 3, *p.video_shape, generator=g)
    return {"audio": audio, "video": video}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("zorro", 5, "tiny", num_fusion_tokens=3).eval()
    with torch.no_grad():  # the zero-initialised heads would hide every dependency
        for p in m.parameters():
            if not p.any():
                p.normal_(std=0.5)
    return m


def test_masks_are_the_papers_tables():
    types = token_types((A, 1), (V, 1), (F, 1))
    assert zorro_mask(types, types).int().tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 1]]  # rows: A, V, F queries
    queries = torch.tensor([int(A), int(V), int(F), int(G)])
    assert readout_mask(queries, types).int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]


@pytest.mark.parametrize("kept", ["audio", "video"])
@pytest.mark.parametrize("path", ["forward_structured", "forward_masked"])
def test_modality_readout_is_bit_identical_whatever_the_other_input(model, kept, path):
    x, y = inputs(1), inputs(2)
    forward = getattr(model, path)
    with torch.no_grad():
        base = forward(**x)
        other_changed = forward(**{kept: x[kept], OTHER[kept]: y[OTHER[kept]]})
        alone = forward(**{kept: x[kept]})
        auto_alone = model(**{kept: x[kept]})  # whichever path forward picks
    assert torch.equal(base.streams[kept], other_changed.streams[kept])  # never reads the other's content
    # absent, the other's keys leave the readout's one masked call: the same values, summed over fewer keys
    torch.testing.assert_close(base.streams[kept], alone.streams[kept], atol=1e-5, rtol=0)
    torch.testing.assert_close(auto_alone.streams[kept], alone.streams[kept], atol=1e-5, rtol=0)
    assert torch.equal(alone.logits, alone.streams[kept])  # unimodal prediction = the pure readout
    assert OTHER[kept] not in alone.streams
    for mixed in ("fusion", "global"):  # the check can fail: these do read the other modality
        assert not torch.allclose(base.streams[mixed], other_changed.streams[mixed])


@pytest.mark.parametrize("kept", ["audio", "video"])
@pytest.mark.parametrize("path", ["forward", "forward_structured", "forward_masked"])
def test_modality_readout_has_exactly_zero_gradient_wrt_the_other_input(model, kept, path):
    x = {m: t.clone().requires_grad_() for m, t in inputs(3).items()}
    out = getattr(model, path)(**x)
    other = x[OTHER[kept]]
    (g,) = torch.autograd.grad(out.streams[kept].sum(), other, retain_graph=True, allow_unused=True)
    assert g is None or torch.count_nonzero(g) == 0
    (g_own,) = torch.autograd.grad(out.streams[kept].sum(), x[kept], retain_graph=True)
    assert torch.count_nonzero(g_own) > 0
    (g_global,) = torch.autograd.grad(out.streams["global"].sum(), other)
    assert torch.count_nonzero(g_global) > 0  # the global readout does read it


@pytest.mark.parametrize("present", [("audio", "video"), ("audio",), ("video",)])
def test_structured_routing_equals_dense_masked_attention(model, present):
    x = {m: t for m, t in inputs(4).items() if m in present}
    with torch.no_grad():
        structured, dense = model.forward_structured(**x), model.forward_masked(**x)
    assert structured.streams.keys() == dense.streams.keys()
    for name in structured.streams:
        torch.testing.assert_close(structured.streams[name], dense.streams[name], atol=1e-5, rtol=0)
    torch.testing.assert_close(structured.logits, dense.logits, atol=1e-5, rtol=0)


def test_fused_readout_option_and_per_readout_loss(model):
    x = inputs(5)
    out = model(**x)
    assert torch.equal(out.logits, out.streams["global"]) and len(out.streams) == 4
    target = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy
    expected = sum(ce(s, target) for s in out.streams.values()) / 4
    torch.testing.assert_close(model.loss(out, target, ce), expected)
    fusion_first = create_model("zorro", 5, "tiny", num_fusion_tokens=3, fused_readout="fusion")
    fusion_first.load_state_dict(model.state_dict())
    out_f = fusion_first(**x)
    assert torch.equal(out_f.logits, out_f.streams["fusion"])
    with pytest.raises(ValueError, match="global"):
        create_model("zorro", 5, "tiny", fused_readout="mean")
