"""Per-clip missing modalities (tasks/presence.py): the batch is grouped by presence and every fusion's unimodal path
runs for the clips that lack a modality; the absent tensor is never read."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fusionbench.config import TrainConfig
from fusionbench.evaluate.conditions import parse_condition
from fusionbench.registry import create_model, list_fusions
from fusionbench.tasks.classify import ClassifyTask
from fusionbench.tasks.presence import forward_present, present_loss

AUDIO_PRESENT = torch.tensor([True, True, False, True, False, True, False])
VIDEO_PRESENT = torch.tensor([True, False, True, True, True, True, False])  # groups of 3, 1 and 2; the last: neither


def _batch(seed: int = 0, n: int = 7):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, 1, 32, 160, generator=g)
    video = torch.randn(n, 3, 16, 32, 32, generator=g)
    return audio, video


def _model(name: str):
    torch.manual_seed(0)
    return create_model(name, 5, "tiny", head_init="xavier").eval()  # non-zero heads: the logits tell clips apart


@pytest.mark.parametrize("fusion", list_fusions())
def test_grouped_batch_equals_each_clip_alone(fusion: str) -> None:
    model = _model(fusion)
    audio, video = _batch()
    with torch.no_grad():
        out = forward_present(model, audio, video, AUDIO_PRESENT, VIDEO_PRESENT)
        assert out.rows.tolist() == [0, 1, 2, 3, 4, 5]  # the clip with neither modality is left out
        for k, row in enumerate(out.rows.tolist()):
            alone = model(audio=audio[row : row + 1] if AUDIO_PRESENT[row] else None,
                          video=video[row : row + 1] if VIDEO_PRESENT[row] else None).logits  # (1, C)
            torch.testing.assert_close(out.logits[k : k + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", list_fusions())
def test_absent_tensor_is_never_read(fusion: str) -> None:
    """Replacing what the batch holds where a modality is absent (silence, noise) changes no logit."""
    model = _model(fusion)
    audio, video = _batch()
    audio2, video2 = audio.clone(), video.clone()
    audio2[~AUDIO_PRESENT] = 0.0  # "silence"
    video2[~VIDEO_PRESENT] = 7.0
    with torch.no_grad():
        a = forward_present(model, audio, video, AUDIO_PRESENT, VIDEO_PRESENT).logits
        b = forward_present(model, audio2, video2, AUDIO_PRESENT, VIDEO_PRESENT).logits
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    # and the masks matter: the same batch read as complete gives other logits for the partial clips
    with torch.no_grad():
        full = forward_present(model, audio, video).logits[:6]
    for row in (1, 2, 4):
        assert not torch.allclose(full[row], a[row], atol=1e-4)
    torch.testing.assert_close(full[[0, 3, 5]], a[[0, 3, 5]], atol=1e-5, rtol=1e-5)


def test_early_fusion_grouping_equals_masked_attention() -> None:
    """The other formulation: early fusion over the whole [CLS ‖ A ‖ V] of every clip, with the absent modality's
    tokens masked out of the keys, gives the grouped logits."""
    model = _model("early")
    audio, video = _batch()
    keep = slice(0, 6)
    audio, video, a_p, v_p = audio[keep], video[keep], AUDIO_PRESENT[keep], VIDEO_PRESENT[keep]
    with torch.no_grad():
        grouped = forward_present(model, audio, video, a_p, v_p).logits
        a, v = model.tokenizer(audio, video)  # (B, N_a, D), (B, N_v, D)
        x = torch.cat([model.cls.expand(len(a), -1, -1), a, v], dim=1)  # (B, 1 + N_a + N_v, D)
        key_ok = torch.cat([torch.ones(len(a), 1, dtype=torch.bool), a_p[:, None].expand(-1, a.shape[1]),
                            v_p[:, None].expand(-1, v.shape[1])], dim=1)  # (B, N)
        mask = key_ok[:, None, None, :]  # (B, 1, 1, N): absent keys are never attended
        for block in model.blocks:
            x = block(x, mask=mask)
        masked = model.head(model.norm(x[:, 0]))  # (B, C)
    torch.testing.assert_close(grouped, masked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", ["mbt", "early"])
def test_loss_is_the_mean_over_clips_of_each_clips_own_rule(fusion: str) -> None:
    model = _model(fusion)
    audio, video = _batch()
    target = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    with torch.no_grad():
        out = forward_present(model, audio, video, AUDIO_PRESENT, VIDEO_PRESENT)
        loss = present_loss(model, out, target, F.cross_entropy)
        per_clip = []
        for row in out.rows.tolist():
            alone = model(audio=audio[row : row + 1] if AUDIO_PRESENT[row] else None,
                          video=video[row : row + 1] if VIDEO_PRESENT[row] else None)
            per_clip.append(model.loss(alone, target[row : row + 1], F.cross_entropy))
    torch.testing.assert_close(loss, torch.stack(per_clip).mean(), atol=1e-5, rtol=1e-5)


def test_test_conditions_score_only_clips_with_the_kept_modality() -> None:
    model = _model("late")
    names = ["av", "audio_only", "video_only"]
    task = ClassifyTask(model, 5, False, OmegaConf.structured(TrainConfig),
                        test_conditions=[[parse_condition(n) for n in names]])
    audio, video = _batch()
    batch = {"audio": audio, "video": video, "label": torch.tensor([0, 1, 2, 3, 4, 0, 1]),
             "audio_present": AUDIO_PRESENT, "video_present": VIDEO_PRESENT}
    with torch.no_grad():
        task.test_step(batch, 0)
    task.on_test_epoch_end()
    r = task.test_results
    assert (r["test/av/clips"], r["test/audio_only/clips"], r["test/video_only/clips"]) == (6, 4, 5)
    # audio_only over the 4 clips with audio is the audio stream of exactly those clips
    with torch.no_grad():
        logits = model(audio=audio[AUDIO_PRESENT]).logits
    expected = F.cross_entropy(logits, batch["label"][AUDIO_PRESENT]).item()
    assert r["test/audio_only/loss"] == pytest.approx(expected, rel=1e-5)


def test_a_condition_with_no_clip_reports_no_metric() -> None:
    task = ClassifyTask(_model("late"), 5, False, OmegaConf.structured(TrainConfig),
                        test_conditions=[[parse_condition("audio_only")]])
    audio, video = _batch()
    batch = {"audio": audio, "video": video, "label": torch.zeros(7, dtype=torch.long),
             "audio_present": torch.zeros(7, dtype=torch.bool), "video_present": torch.ones(7, dtype=torch.bool)}
    with torch.no_grad():
        task.test_step(batch, 0)
    task.on_test_epoch_end()
    assert task.test_results == {"test/audio_only/clips": 0.0}
