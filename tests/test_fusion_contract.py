"""The model contract, for every registered fusion: shapes, streams, unimodal both ways, backward, size, overrides."""
import inspect

import pytest
import torch
import torch.nn.functional as F

from fusionbench.nn.model import FusionModel, FusionOutput
from fusionbench.registry import PRESETS, create_model, get_fusion, list_fusions

NUM_CLASSES = 7
FUSIONS = list_fusions()


def inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = PRESETS["tiny"]
    return torch.randn(batch, 1, *p.audio_shape, generator=g), torch.randn(batch, 3, *p.video_shape, generator=g)


def test_all_strategies_registered():
    assert {"late", "early", "mid", "mbt", "zorro", "deepavfusion"} <= set(FUSIONS)


@pytest.fixture(params=FUSIONS)
def model(request) -> FusionModel:
    torch.manual_seed(0)
    return create_model(request.param, NUM_CLASSES, "tiny")


def test_av_forward_shapes_and_streams(model):
    a, v = inputs()
    out = model(audio=a, video=v)
    assert isinstance(out, FusionOutput)
    assert out.logits.shape == (2, NUM_CLASSES) and out.streams
    for name, logits in out.streams.items():
        assert logits.shape == (2, NUM_CLASSES), name
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("drop", ["audio", "video"])
def test_unimodal_forward_both_ways(model, drop):
    a, v = inputs()
    out = model(**({"video": v} if drop == "audio" else {"audio": a}))
    assert out.logits.shape == (2, NUM_CLASSES) and torch.isfinite(out.logits).all()
    assert drop not in out.streams  # the absent modality has no readout of its own
    assert all(s.shape == (2, NUM_CLASSES) for s in out.streams.values())


def test_no_modality_is_an_error(model):
    with pytest.raises(ValueError, match="at least one"):
        model()


@pytest.mark.parametrize("modalities", [("audio", "video"), ("audio",), ("video",)])
def test_backward_reaches_every_used_parameter(model, modalities):
    with torch.no_grad():  # zero-initialised heads would block every gradient but their own
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.1)
    a, v = inputs()
    out = model(**{m: x for m, x in (("audio", a), ("video", v)) if m in modalities})
    loss = model.loss(out, torch.tensor([1, 3]), F.cross_entropy)
    assert loss.ndim == 0
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    if modalities == ("audio", "video"):  # with both inputs every parameter takes part
        assert [n for n, g in grads.items() if g is None] == []
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "tokenizer" in n)


@pytest.mark.parametrize("name", FUSIONS)
def test_tiny_preset_is_under_one_million_parameters(name):
    assert sum(p.numel() for p in create_model(name, 527, "tiny").parameters()) < 1_000_000


@pytest.mark.parametrize("name", FUSIONS)
def test_override_typo_is_rejected_with_the_valid_keys(name):
    own = [p.name for p in inspect.signature(get_fusion(name).__init__).parameters.values() if p.kind is p.KEYWORD_ONLY]
    with pytest.raises(KeyError) as err:
        create_model(name, NUM_CLASSES, "tiny", fusion_layr=1)
    for key in [*own, "dim", "depth"]:
        assert key in str(err.value)
    for key in own:  # and every option of the fusion is accepted
        default = inspect.signature(get_fusion(name).__init__).parameters[key].default
        create_model(name, NUM_CLASSES, "tiny", **{key: default})


@pytest.mark.parametrize("name", FUSIONS)
def test_docstring_states_the_unimodal_policy(name):
    doc = inspect.getmodule(get_fusion(name)).__doc__
    assert "Unimodal policy" in doc


def test_forward_flops_can_be_counted(model):
    """FlopCounterMode's module tracker rejects an expanded parameter view as a module input under no_grad."""
    from fusionbench.evaluate.efficiency import forward_flops

    p = PRESETS["tiny"]
    assert forward_flops(model, p.audio_shape, p.video_shape) > 0
