"""DeepAVFusion: the interaction blocks equal naive per-pair loops, factorized memory has no N_v·N_a term, each quirk
switch matters and is on by default, fusion layers and the unimodal policy behave as documented."""
import pytest
import torch
import torch.nn.functional as F

from fusionbench.fusions.deepavfusion import parse_fusion_layers
from fusionbench.nn.fusion_blocks import FusionBlock
from fusionbench.registry import PRESETS, create_model

DIM, HEADS, TOKENS = 16, 2, (3, 2, 2)  # (F, M_v, M_a)


def block(kind: str, **kw) -> FusionBlock:
    torch.manual_seed(0)
    return FusionBlock(kind, DIM, HEADS, TOKENS, attn_ratio=0.5, mlp_ratio=1.0, **kw)


def tokens(n_v: int, n_a: int, seed: int = 0, grad: bool = False) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, sum(TOKENS), DIM), (2, n_v, DIM), (2, n_a, DIM)]
    return tuple(torch.randn(s, generator=g).requires_grad_(grad) for s in shapes)


def naive_attention(qs: list, ks: list, vs: list, heads: int, scale: float) -> torch.Tensor:
    """One query vector at a time, one head at a time, one key at a time."""
    out = []
    for q in qs:
        d_q, d_v = q.numel() // heads, vs[0].numel() // heads
        per_head = []
        for h in range(heads):
            scores = torch.stack([(q[h * d_q : (h + 1) * d_q] * k[h * d_q : (h + 1) * d_q]).sum() * scale for k in ks])
            weights = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
            per_head.append(sum(w * v[h * d_v : (h + 1) * d_v] for w, v in zip(weights, vs)))
        out.append(torch.cat(per_head))
    return torch.stack(out)


def naive_pairs(xs: torch.Tensor, ys: torch.Tensor) -> list[torch.Tensor]:
    return [torch.cat([x, y]) for x in xs for y in ys]


def naive_dense(attn, f, xv, xa) -> torch.Tensor:
    inner = attn.q.out_features
    out = []
    for b in range(f.shape[0]):
        kv = [attn.kv(p) for p in naive_pairs(xv[b], xa[b])]
        qs = [attn.q(t) for t in f[b]]
        out.append(attn.proj(naive_attention(qs, [x[:inner] for x in kv], [x[inner:] for x in kv], HEADS, attn.scale)))
    return torch.stack(out)


def naive_cross(attn, queries, keys) -> torch.Tensor:
    """fusionbench.nn.block.Attention, one query and one key at a time."""
    kv = [attn.kv(k) for k in keys]
    qs = [attn.q(q) for q in queries]
    return attn.proj(naive_attention(qs, [x[:DIM] for x in kv], [x[DIM:] for x in kv], HEADS, (DIM / HEADS) ** -0.5))


def naive_factorized(attn, f, xv, xa) -> torch.Tensor:
    out = []
    for b in range(f.shape[0]):
        f_mm, f_v, f_a = f[b][: TOKENS[0]], f[b][TOKENS[0] : TOKENS[0] + TOKENS[1]], f[b][TOKENS[0] + TOKENS[1] :]
        u_v, u_a = naive_cross(attn.aggr_v, f_v, xv[b]), naive_cross(attn.aggr_a, f_a, xa[b])
        pairs = naive_pairs(u_v, u_a)  # M_v·M_a pairs of aggregated tokens
        qs = [attn.q(t) for t in f_mm]
        u_mm = attn.proj(naive_attention(qs, [attn.k(p) for p in pairs], [attn.v(p) for p in pairs], HEADS, attn.scale))
        out.append(torch.cat([u_mm, u_v, u_a]))
    return torch.stack(out)


def naive_token(attn, f, xv, xa) -> torch.Tensor:
    """f queries over [x_v ‖ x_a] at width D', scaled by its own head width (D'/heads)^-0.5."""
    inner = attn.q.out_features
    out = []
    for b in range(f.shape[0]):
        kv = [attn.kv(k) for k in torch.cat([xv[b], xa[b]])]
        qs = [attn.q(t) for t in f[b]]
        scale = (inner / HEADS) ** -0.5
        out.append(attn.proj(naive_attention(qs, [x[:inner] for x in kv], [x[inner:] for x in kv], HEADS, scale)))
    return torch.stack(out)


@pytest.mark.parametrize(
    "kind, naive", [("token", naive_token), ("dense", naive_dense), ("factorized", naive_factorized)]
)
def test_interaction_matches_the_naive_per_pair_loop(kind, naive):
    blk = block(kind)
    f, xv, xa = tokens(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(blk.attn(f, xv, xa), naive(blk.attn, f, xv, xa), atol=1e-5, rtol=1e-5)
        fn, vn, an = blk.norm_f(f), blk.norm_v(xv), blk.norm_a(xa)
        mid = fn + naive(blk.attn, fn, vn, an)  # residual on the normalised fusion tokens (the code's quirk)
        torch.testing.assert_close(blk(f, xv, xa), mid + blk.mlp(blk.norm2(mid)), atol=1e-5, rtol=1e-5)


def saved_bytes(blk: FusionBlock, n_v: int, n_a: int) -> int:
    """Bytes autograd saves for backward in one forward of the block."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        blk(*tokens(n_v, n_a, grad=True))
    return total


@pytest.mark.parametrize("kind", ["dense", "factorized"])
def test_only_dense_activation_memory_grows_with_the_number_of_pairs(kind):
    blk = block(kind)
    small, large = 4, 32
    mem = {(v, a): saved_bytes(blk, v, a) for v in (small, large) for a in (small, large)}
    # a term in N_v·N_a is what remains after removing everything linear in N_v and in N_a:
    pair_term = mem[large, large] - mem[large, small] - mem[small, large] + mem[small, small]
    if kind == "factorized":
        assert pair_term == 0, mem
    else:  # at least the (N_v·N_a, 2D) pair tensor, for the extra (large - small)² pairs of 2 samples
        assert pair_term >= (large - small) ** 2 * 2 * DIM * 4 * 2, mem
        assert mem[large, large] > 10 * mem[small, small]


def randomized(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("deepavfusion", 5, "tiny", **overrides)


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = PRESETS["tiny"]
    audio, video = torch.randn(2, 1, *p.audio_shape, generator=g), torch.randn(2, 3, *p.video_shape, generator=g)
    return {"audio": audio, "video": video}


def test_quirks_are_on_by_default():
    model = randomized()
    assert model.parallel_update
    for blk in model.fusion.values():
        assert blk.residual_on_normed
        assert blk.attn.scale == (model.dim / model.heads) ** -0.5  # not (D'/heads)^-0.5


@pytest.mark.parametrize("switch", ["residual_on_normed", "quirk_attn_scale", "parallel_update"])
@pytest.mark.parametrize("kind", ["dense", "factorized"])
def test_each_quirk_switch_changes_the_output(switch, kind):
    default = randomized(fusion_block=kind)
    flipped = create_model("deepavfusion", 5, "tiny", fusion_block=kind, **{switch: False})
    flipped.load_state_dict(default.state_dict())  # same weights: only the switch differs
    x = inputs()
    with torch.no_grad():
        a, b = default(**x), flipped(**x)
    assert not torch.allclose(a.logits, b.logits, atol=1e-6)


def test_fusion_layers_spec():
    assert parse_fusion_layers("all", 4) == [0, 1, 2, 3]
    assert parse_fusion_layers("none", 4) == []
    assert parse_fusion_layers("0-2", 4) == parse_fusion_layers([2, 0], 4) == [0, 2]
    assert parse_fusion_layers(1, 4) == [1]
    with pytest.raises(ValueError, match="fusion_layers"):
        parse_fusion_layers([4], 4)
    assert list(randomized(fusion_layers=[1]).fusion) == ["1"]


def test_no_fusion_layers_is_independent_towers_and_a_constant_fusion_head():
    model = randomized(fusion_layers="none")
    with torch.no_grad():
        one, two = model(**inputs(1)), model(**inputs(2))
    assert torch.equal(one.streams["fusion"][0], two.streams["fusion"][1])  # the initial f, whatever the input
    assert not torch.equal(one.streams["audio"], two.streams["audio"])


@pytest.mark.parametrize("kind, fusion_reads_input", [("token", True), ("dense", False), ("factorized", True)])
def test_unimodal_policy_omits_the_terms_that_need_the_absent_modality(kind, fusion_reads_input):
    model = randomized(fusion_block=kind)
    with torch.no_grad():
        one, two = model(audio=inputs(1)["audio"]), model(audio=inputs(2)["audio"])
    assert set(one.streams) == {"audio", "fusion"}
    torch.testing.assert_close(one.logits, (one.streams["audio"] + one.streams["fusion"]) / 2)
    # dense: every pair needs video, so f never reads the audio (the towers still read f)
    assert torch.allclose(one.streams["fusion"], two.streams["fusion"]) != fusion_reads_input


@pytest.mark.parametrize("joint", [True, False])
def test_joint_loss_is_on_the_averaged_logits(joint):
    model = randomized(joint_loss=joint)
    out = model(**inputs())
    target = torch.tensor([0, 4])
    expected = (
        F.cross_entropy(out.logits, target)
        if joint
        else sum(F.cross_entropy(s, target) for s in out.streams.values()) / 3
    )
    torch.testing.assert_close(model.loss(out, target, F.cross_entropy), expected)
    torch.testing.assert_close(out.logits, sum(out.streams.values()) / 3)


@pytest.mark.parametrize("perturbed", ["video", "audio"])
def test_token_interaction_reads_both_modalities(perturbed):
    blk = block("token")
    f, xv, xa = tokens(3, 4)
    other = tokens(3, 4, seed=1)
    xv2, xa2 = (other[1], xa) if perturbed == "video" else (xv, other[2])
    with torch.no_grad():
        assert not torch.allclose(blk(f, xv, xa), blk(f, xv2, xa2), atol=1e-5)
    model = randomized(fusion_block="token")
    x, y = inputs(1), inputs(2)
    changed = {**x, perturbed: y[perturbed]}
    with torch.no_grad():
        assert not torch.allclose(model(**x).streams["fusion"], model(**changed).streams["fusion"], atol=1e-5)


def naive_encoder(model, audio: torch.Tensor, video: torch.Tensor, parallel: bool) -> dict[str, torch.Tensor]:
    """The public code's loop (methods.md §3.2), written out: at a fusion layer each tower runs its full block over
    [f ‖ own] and discards the fusion positions; f is updated by the layer's fusion block from the previous layer's
    modality tokens (``parallel``) or from the updated ones; then LNs, mean pools, three heads, mean logits."""
    xv, xa = model.tokenizer.video(video), model.tokenizer.audio(audio)
    f = model.fusion_tokens.expand(audio.shape[0], -1, -1)
    n_f = f.shape[1]
    for layer in range(model.depth):
        block_v, block_a = model.blocks["video"][layer], model.blocks["audio"][layer]
        if layer not in model.fusion_layers:
            xv, xa = block_v(xv), block_a(xa)
            continue
        new_v = block_v(torch.cat([f, xv], dim=1))[:, n_f:]
        new_a = block_a(torch.cat([f, xa], dim=1))[:, n_f:]
        f = model.fusion[str(layer)](f, *((xv, xa) if parallel else (new_v, new_a)))
        xv, xa = new_v, new_a
    streams = {
        "audio": model.heads_out["audio"](model.norms["audio"](xa).mean(1)),
        "video": model.heads_out["video"](model.norms["video"](xv).mean(1)),
        "fusion": model.heads_out["fusion"](model.norms["fusion"](f).mean(1)),
    }
    streams["logits"] = (streams["audio"] + streams["video"] + streams["fusion"]) / 3
    return streams


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("kind", ["token", "dense", "factorized"])
@pytest.mark.parametrize("layers", ["all", [1]])
def test_encoder_loop_matches_the_naive_loop(kind, parallel, layers):
    torch.manual_seed(0)
    model = create_model(
        "deepavfusion", 5, "tiny", depth=3, fusion_block=kind, parallel_update=parallel, fusion_layers=layers
    ).eval()
    x = inputs(3)
    with torch.no_grad():
        out, ref = model(**x), naive_encoder(model, x["audio"], x["video"], parallel)
        other = naive_encoder(model, x["audio"], x["video"], not parallel)
    for s in ("audio", "video", "fusion"):
        torch.testing.assert_close(out.streams[s], ref[s], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, ref["logits"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.logits, other["logits"], atol=1e-5)  # parallel_update means what it says
