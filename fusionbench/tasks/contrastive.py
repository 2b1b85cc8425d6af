"""``objective=contrastive``: Zorro-style audio-visual contrastive pretraining, for any fusion with ``embed``.

Zorro's rule (methods.md §2.4): symmetric InfoNCE between the audio and the video readouts, through L2-normalised
projection heads. fusionbench's choices (Zorro's exact form is unverified):
    L = NCE(a, v) + fusion_weight · NCE(f, proj([a; v]))
with NCE symmetric (the mean of the a→v and v→a cross-entropies over the batch, positives on the diagonal) and one
fixed temperature τ (``pretrain.temperature``; CAV-MAE's 0.05). The second term exists where the fusion has a
fused readout: ``fusion`` (Zorro, DeepAVFusion) or ``global`` (early fusion's CLS); late / mid / MBT have none.
The readouts (``embed``): Zorro's audio / video readouts; each tower's CLS (late, mid, MBT); the mean-pooled tokens
(DeepAVFusion); early fusion has no modality-pure readout, so the mean of its audio and of its video tokens at the
last layer — Zorro's "contrastive without masks", which it says collapses.

Collapse is measured, not assumed: at each validation the task logs, over the whole split, the effective rank of
every readout (``val/erank/<readout>``, RankMe: exp of the entropy of the normalised singular values; 1 = collapsed
to one direction, D = full), and Wang & Isola's alignment (E‖z_a − z_v‖², positives) and uniformity
(log E exp(−2‖z − z'‖²), per modality) of the projected, normalised embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from fusionbench.nn.model import FusionModel
from fusionbench.tasks.pretrain_base import PretrainTask

FUSED_READOUTS = ("fusion", "global")  # the first one a fusion's embed has is its fused readout


def info_nce(x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE over a batch: x, y (B, P) L2-normalised, pair i positive; mean of x→y and y→x."""
    logits = x @ y.T / temperature  # (B, B): row i scores x_i against every y
    target = torch.arange(len(x), device=x.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    """exp(H(p)), p = σ / Σσ the normalised singular values of z (N, D) (RankMe, Garrido et al. 2023)."""
    s = torch.linalg.svdvals(z.double())  # (min(N, D),)
    p = s / s.sum().clamp_min(eps)
    return float(torch.exp(-(p * torch.log(p.clamp_min(eps))).sum()))


def alignment(x: Tensor, y: Tensor) -> float:
    """Wang & Isola: E‖x_i − y_i‖² over positive pairs of normalised embeddings (0 = perfectly aligned)."""
    return float((x - y).norm(dim=1).pow(2).mean())


def uniformity(x: Tensor, t: float = 2.0) -> float:
    """Wang & Isola: log E exp(−t‖x_i − x_j‖²) over distinct pairs (lower = more uniform on the sphere; 0 = one point)."""
    return float(torch.pdist(x.double()).pow(2).mul(-t).exp().mean().log())


def fused_readout(readouts: dict[str, Tensor]) -> str | None:
    return next((r for r in FUSED_READOUTS if r in readouts), None)


class ContrastiveTask(PretrainTask):
    def __init__(self, model: FusionModel, pretrain_cfg: DictConfig, train_cfg: DictConfig, batch_size: int) -> None:
        super().__init__(model, train_cfg, batch_size)
        if not hasattr(model, "embed"):
            raise ValueError(f"{type(model).__name__} has no embed(): it cannot be pretrained contrastively")
        self.temperature = float(pretrain_cfg.temperature)
        self.fusion_weight = float(pretrain_cfg.fusion_weight)
        self.fused = fused_readout(self._readout_names(model))
        dim, p = model.dim, int(pretrain_cfg.proj_dim)
        proj = {"audio": nn.Linear(dim, p), "video": nn.Linear(dim, p)}
        if self.fused:
            proj["fused"] = nn.Linear(dim, p)
            proj["joint"] = nn.Linear(2 * dim, p)  # proj([a; v])
        self.proj = nn.ModuleDict(proj)
        self._val: dict[str, list[Tensor]] = {}

    @staticmethod
    def _readout_names(model: FusionModel) -> dict[str, Tensor]:
        """The readouts ``embed`` gives for A+V, from one zero clip at the model's geometry (shapes only)."""
        tok = model.tokenizer
        audio = torch.zeros(1, 1, *tok.audio.audio_shape)  # (1, 1, F, T)
        video = torch.zeros(1, 3, *tok.video.video_shape)  # (1, 3, T, H, W)
        with torch.no_grad():
            return model.embed(audio, video)

    def project(self, audio: Tensor, video: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(readouts {r: (B, D)}, normalised projections {audio, video[, fused, joint]: (B, P)})."""
        emb = self.model.embed(audio, video)
        z = {"audio": self.proj["audio"](emb["audio"]), "video": self.proj["video"](emb["video"])}
        if self.fused:
            z["fused"] = self.proj["fused"](emb[self.fused])
            z["joint"] = self.proj["joint"](torch.cat([emb["audio"], emb["video"]], dim=-1))  # (B, P)
        return emb, {k: F.normalize(v, dim=-1) for k, v in z.items()}

    def losses(self, z: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = {"nce_av": info_nce(z["audio"], z["video"], self.temperature)}
        loss = terms["nce_av"]
        if self.fused:
            terms["nce_fused"] = info_nce(z["fused"], z["joint"], self.temperature)
            loss = loss + self.fusion_weight * terms["nce_fused"]
        return {"loss": loss, **terms}

    def objective(self, audio: Tensor, video: Tensor) -> dict[str, Tensor]:
        emb, z = self.project(audio, video)
        if not self.training:  # kept for the split-level collapse measures
            for name, value in [*emb.items(), *((f"proj_{k}", v) for k, v in z.items())]:
                self._val.setdefault(name, []).append(value.detach().float().cpu())
        return self.losses(z)

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        val = {k: torch.cat(v) for k, v in self._val.items()}
        self._val = {}
        metrics = {f"val/erank/{k}": effective_rank(v) for k, v in val.items() if not k.startswith("proj_")}
        metrics["val/align"] = alignment(val["proj_audio"], val["proj_video"])
        metrics["val/uniform/audio"] = uniformity(val["proj_audio"])
        metrics["val/uniform/video"] = uniformity(val["proj_video"])
        self.log_dict(metrics)
