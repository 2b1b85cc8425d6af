"""Patch embeddings as linear maps equal the stride-p convolutions they replace; token order is time-major."""
import torch
import torch.nn.functional as F

from fusionbench.nn.tokenizers import AudioPatchEmbed, VideoTubeletEmbed


def test_audio_patch_embed_equals_conv2d():
    torch.manual_seed(0)
    embed = AudioPatchEmbed((8, 20), (4, 5), dim=6)
    x = torch.randn(2, 1, 8, 20)
    weight = embed.proj.weight.view(6, 1, 4, 5)
    ref = F.conv2d(x, weight, embed.proj.bias, stride=(4, 5))  # (B, D, G_f, G_t)
    ref = ref.permute(0, 3, 2, 1).flatten(1, 2) + embed.pos  # time-major
    torch.testing.assert_close(embed(x), ref)


def test_video_tubelet_embed_equals_conv3d():
    torch.manual_seed(0)
    embed = VideoTubeletEmbed((4, 8, 8), (2, 4, 4), dim=5)
    x = torch.randn(2, 3, 4, 8, 8)
    weight = embed.proj.weight.view(5, 3, 2, 4, 4)
    ref = F.conv3d(x, weight, embed.proj.bias, stride=(2, 4, 4)).flatten(2).transpose(1, 2) + embed.pos
    torch.testing.assert_close(embed(x), ref)


def test_audio_token_t_sees_only_its_time_slice():
    embed = AudioPatchEmbed((8, 20), (8, 5), dim=3)
    x = torch.zeros(1, 1, 8, 20)
    x[..., 5:10] = 1.0  # time patch 1 only
    changed = (embed(x) - embed(torch.zeros_like(x))).abs().sum(-1)[0]
    assert changed.nonzero().flatten().tolist() == [1]
