"""The pretraining objectives on the tiny preset, on fixed synthetic tensors: the contrastive loss against a naive
loop, finite NCE gradients, exact masking ratios, masked tokens kept out of the encoder, the masked-patch loss, and
each loss decreasing within a few dozen steps on one fixed batch."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fusionbench.config import PretrainConfig, TrainConfig
from fusionbench.registry import create_model
from fusionbench.tasks import mae
from fusionbench.tasks.contrastive import ContrastiveTask, effective_rank, info_nce
from fusionbench.tasks.mae import MAETask, masked_patch_loss, patchify_audio, patchify_video, random_masking

GEOMETRY = {"audio_shape": (32, 160), "video_shape": (16, 32, 32)}


def _cfgs(**pretrain):
    p = OmegaConf.structured(PretrainConfig)
    for k, v in pretrain.items():
        p[k] = v
    return p, OmegaConf.structured(TrainConfig)


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, *GEOMETRY["audio_shape"], generator=g), torch.randn(n, 3, *GEOMETRY["video_shape"], generator=g)


def _task(kind: str, fusion: str, **pretrain):
    torch.manual_seed(0)
    model = create_model(fusion, 10, "tiny", **GEOMETRY)
    cls = ContrastiveTask if kind == "contrastive" else MAETask
    return cls(model, *_cfgs(**pretrain), batch_size=8)


def test_info_nce_equals_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=-1)
    tau, n = 0.1, 6
    total = 0.0
    for i in range(n):  # x_i → y (row i), and y_i → x (column i)
        row = [math.exp(float(x[i] @ y[j]) / tau) for j in range(n)]
        col = [math.exp(float(y[i] @ x[j]) / tau) for j in range(n)]
        total += -math.log(row[i] / sum(row)) - math.log(col[i] / sum(col))
    assert float(info_nce(x, y, tau)) == pytest.approx(total / (2 * n), rel=1e-9)


@pytest.mark.parametrize("fusion", ["zorro", "early", "late"])
def test_contrastive_terms_and_finite_gradients(fusion):
    task = _task("contrastive", fusion, temperature=0.01)  # a sharp τ: exp overflows if the NCE is computed naively
    audio, video = _batch()
    _, z = task.project(audio, video)
    assert all(torch.allclose(v.norm(dim=-1), torch.ones(len(v))) for v in z.values())  # L2-normalised projections
    terms = task.objective(audio, video)
    assert ("nce_fused" in terms) == (fusion != "late")  # late fusion has no fused readout
    expected = terms["nce_av"] + terms.get("nce_fused", 0.0)
    assert torch.allclose(terms["loss"], expected)
    terms["loss"].backward()
    grads = [p.grad for p in task.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def _fit_fixed_batch(task, steps: int = 30, lr: float = 2e-3) -> tuple[float, float]:
    audio, video = _batch()
    opt = torch.optim.AdamW(task.parameters(), lr=lr)
    losses = []
    torch.manual_seed(0)
    for _ in range(steps):
        loss = task.objective(audio, video)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], sum(losses[-3:]) / 3


@pytest.mark.parametrize("fusion", ["zorro", "early", "late", "deepavfusion"])
def test_contrastive_loss_decreases_on_a_fixed_batch(fusion):
    first, last = _fit_fixed_batch(_task("contrastive", fusion))
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("fusion", ["deepavfusion", "late", "mbt"])
def test_mae_loss_decreases_on_a_fixed_batch(fusion):
    first, last = _fit_fixed_batch(_task("mae", fusion))
    assert last < 0.9 * first, (first, last)


@pytest.mark.parametrize("n, ratio, visible", [(9, 0.8, 2), (40, 0.75, 10), (96, 0.8, 19), (64, 0.75, 16)])
def test_masking_keeps_exactly_round_n_times_one_minus_r(n, ratio, visible):
    torch.manual_seed(0)
    keep, masked = random_masking(5, n, ratio, torch.device("cpu"))
    assert keep.shape == (5, visible)
    assert (masked.sum(1) == n - visible).all()
    for row, m in zip(keep, masked):
        assert len(set(row.tolist())) == visible and not m[row].any()  # the kept are distinct and unmasked
    assert not torch.equal(keep[0], keep[1])  # a fresh subset per clip


def test_the_task_masks_each_modality_at_its_ratio():
    task = _task("mae", "deepavfusion")
    n_a, n_v = task.model.num_audio_tokens, task.model.num_video_tokens
    out = task.reconstruct(*_batch())
    assert (out["audio"][2].sum(1) == n_a - round(n_a * 0.2)).all()
    assert (out["video"][2].sum(1) == n_v - round(n_v * 0.25)).all()


def test_patchify_follows_the_tokenizer_order():
    task = _task("mae", "late")
    tok = task.model.tokenizer
    audio, video = _batch(2)
    assert torch.allclose(tok.audio.proj(patchify_audio(audio, tok.audio)) + tok.audio.pos, tok.audio(audio), atol=1e-6)
    assert torch.allclose(tok.video.proj(patchify_video(video, tok.video)) + tok.video.pos, tok.video(video), atol=1e-6)


def _only_masked_changed(x: torch.Tensor, patchify, embed, masked: torch.Tensor) -> torch.Tensor:
    """x with noise added to the pixels of the masked patches only."""
    index = patchify(torch.arange(x.numel()).view_as(x).double(), embed).long()  # (B, N, P) → flat pixel index
    out = x.clone().view(-1)
    out[index[masked].view(-1)] += 5.0
    return out.view_as(x)


@pytest.mark.parametrize("fusion", ["deepavfusion", "mid"])
def test_masked_tokens_never_reach_the_encoder(fusion):
    task = _task("mae", fusion).eval()
    audio, video = _batch(4)
    tok = task.model.tokenizer
    torch.manual_seed(3)
    before = task.reconstruct(audio, video)
    audio2 = _only_masked_changed(audio, patchify_audio, tok.audio, before["audio"][2])
    video2 = _only_masked_changed(video, patchify_video, tok.video, before["video"][2])
    torch.manual_seed(3)  # the same masks
    after = task.reconstruct(audio2, video2)
    for m in ("audio", "video"):
        assert torch.equal(before[m][2], after[m][2])
        assert torch.equal(before[m][0], after[m][0]), m  # predictions do not see the masked pixels
        assert not torch.equal(before[m][1], after[m][1])  # the targets do


def test_masked_patch_loss_counts_masked_patches_only_with_normalised_targets():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 6, 12, generator=g) * 3 + 1
    masked = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    pred = torch.where(masked[..., None], normed, torch.randn(2, 6, 12, generator=g) * 100)  # visible: garbage
    assert float(masked_patch_loss(pred, target, masked, norm_pix=True)) == pytest.approx(0.0, abs=1e-8)
    pred = torch.randn(2, 6, 12, generator=g)
    naive = sum(float(((pred[b, i] - normed[b, i]) ** 2).mean()) for b in range(2) for i in range(6) if masked[b, i]) / 6
    assert float(masked_patch_loss(pred, target, masked, norm_pix=True)) == pytest.approx(naive, rel=1e-5)


def test_decoder_positional_embedding_is_fixed_and_the_prefix_is_removed():
    task = _task("mae", "deepavfusion")
    names = [n for n, _ in task.named_parameters()]
    assert not any(n.endswith(".pos") for n in names if n.startswith("decoders."))  # sin-cos, not learned
    out = task.reconstruct(*_batch(2))
    tok = task.model.tokenizer
    assert out["video"][0].shape == (2, task.model.num_video_tokens, tok.video.proj.in_features)
    assert out["audio"][0].shape == (2, task.model.num_audio_tokens, tok.audio.proj.in_features)
    pos = mae.sincos_pos_embed(64, (3, 4))
    assert pos.shape == (12, 64) and torch.unique(pos, dim=0).shape[0] == 12  # every position distinct


def test_mae_rejects_shared_backbone_fusions():
    with pytest.raises(ValueError, match="supports deepavfusion"):
        _task("mae", "zorro")


def test_effective_rank_of_a_collapsed_and_a_full_set():
    g = torch.Generator().manual_seed(0)
    assert effective_rank(torch.ones(50, 8) + 1e-9 * torch.randn(50, 8, generator=g)) == pytest.approx(1.0, abs=1e-3)
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0)
