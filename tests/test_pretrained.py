"""Pretrained ViT checkpoints into fusionbench towers; timm's own forward is the reference (a dev dependency)."""
from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fusionbench.errors import UserError
from fusionbench.init import apply_init
from fusionbench.nn import pretrained
from fusionbench.registry import create_model


def _timm():
    """timm, importable without torchvision: no torchvision wheel matches this torch (2.13) here, and timm's ViT uses
    none of it, so an import-only stand-in is put in place when the real one cannot load."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        class _Any:
            def __init__(self, *a, **k): ...
            def __getattr__(self, name): return _Any()
            def __call__(self, *a, **k): return _Any()
            def __mro_entries__(self, bases): return (object,)  # a stand-in base class

        class _Mod(types.ModuleType):
            def __getattr__(self, name):
                if name.startswith("__"):
                    raise AttributeError(name)
                return _Any()

        for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
                     "torchvision.transforms.functional", "torchvision.utils", "torchvision.models",
                     "torchvision.models.feature_extraction", "torchvision.datasets", "torchvision.io"):
            mod = _Mod(name)
            mod.__spec__, mod.__path__ = importlib.machinery.ModuleSpec(name, None), []
            sys.modules.setdefault(name, mod)
    return pytest.importorskip("timm")


timm = _timm()
from timm.layers import resample_abs_pos_embed  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

DIM, DEPTH, HEADS = 64, 2, 4


def _vit(img=64, in_chans=3, seed=0, **kw) -> VisionTransformer:
    """A narrow timm ViT with every parameter drawn at random (norms and biases too, so none is left at 1 or 0)."""
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=img, patch_size=16, in_chans=in_chans, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                            mlp_ratio=2.0, num_classes=0, **kw).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return vit


def _model(fusion="late", **geometry):
    torch.manual_seed(1)
    geo = dict(dim=DIM, depth=DEPTH, heads=HEADS, mlp_ratio=2.0, audio_shape=(64, 64), audio_patch=(16, 16),
               video_shape=(1, 64, 64), video_patch=(1, 16, 16)) | geometry
    return create_model(fusion, 5, "tiny", **geo).eval()


def _init(**paths):
    return OmegaConf.create({"model": "", "audio": "", "video": "", "inflate": "central"} | paths)


def _video_tower_tokens(model, video):
    """The video tower's final tokens after the final LayerNorm: timm's ``forward_features``."""
    x = model.towers.with_cls("video", model.tokenizer.video(video))  # (B, 1 + N_v, D)
    for block in model.towers.blocks["video"]:
        x = block(x)
    return model.towers.norm(x)


def _audio_tower_tokens(model, audio):
    x = model.towers.with_cls("audio", model.tokenizer.audio(audio))  # (B, 1 + N_a, D)
    for block in model.towers.blocks["audio"]:
        x = block(x)
    return model.towers.norm(x)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_vit_into_video_tower_gives_timm_tokens(tmp_path, suffix):
    vit = _vit()
    path = tmp_path / f"vit{suffix}"
    if suffix == ".pth":
        torch.save(vit.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    model = _model("late")
    report = apply_init(model, _init(video=str(path)))
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = vit.forward_features(img)  # (B, 1 + 16, D)
        got = _video_tower_tokens(model, img[:, :, None])
    assert (got - ref).abs().max() <= 1e-5
    assert report.sources["video"]["layout"] == "timm" and report.unused["video"] == []
    assert any(k.startswith("towers.blocks.audio") for k in report.not_in_checkpoint)  # the other tower stays random
    assert "towers.head.weight" in report.not_in_checkpoint


def test_mae_checkpoint_and_tubelet_inflation(tmp_path):
    """MAE layout (``model`` key, decoder keys unused); central inflation = timm on each tubelet's central frame,
    average inflation = timm on the tubelet's mean frame; positions repeated over time."""
    vit = _vit(seed=3)
    decoder = {"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, DIM)}
    state = {"model": {**vit.state_dict(), **decoder}}
    torch.save(state, tmp_path / "mae.pth")
    vit = vit.double()  # float64: the inflated kernel sums its zeros in another order than the conv (rounding only)
    video = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64)  # (B, C, T, H, W): two tubelets of 2 frames
    for inflate, frames in (("central", video[:, :, 1::2]), ("average", (video[:, :, 0::2] + video[:, :, 1::2]) / 2)):
        model = _model("mbt", video_shape=(4, 64, 64), video_patch=(2, 16, 16))
        report = apply_init(model, _init(video=str(tmp_path / "mae.pth"), inflate=inflate))
        model = model.double()
        assert report.sources["video"]["layout"] == "mae"
        assert set(report.unused["video"]) == {"mask_token", "decoder_embed.weight"}
        assert "bottleneck" in report.not_in_checkpoint
        with torch.no_grad():
            got = model.tokenizer.video(video).view(2, 2, 16, DIM)  # (B, G_t, 16, D)
            for t in range(2):
                ref = vit.patch_embed(frames[:, :, t]) + vit.pos_embed[:, 1:]  # (B, 16, D)
                assert (got[:, t] - ref).abs().max() <= 1e-10, (inflate, t)


def test_pos_embed_resampled_bicubic_to_the_token_grid(tmp_path):
    vit = _vit(seed=4)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    for side in (32, 96):  # down (4×4 → 2×2) and up (4×4 → 6×6)
        model = _model("early", video_shape=(1, side, side))
        apply_init(model, _init(video=str(tmp_path / "vit.pth")))
        ref = resample_abs_pos_embed(vit.pos_embed.detach(), [side // 16] * 2, num_prefix_tokens=1)  # timm's own
        assert (model.tokenizer.video.pos - ref[:, 1:]).abs().max() <= 1e-6
        assert torch.equal(model.cls, vit.cls_token + vit.pos_embed[:, :1])  # early's joint CLS, position folded in


def test_image_vit_into_audio_tower_sums_channels(tmp_path):
    """An RGB ViT into the audio tower: a spectrogram copied to three channels through timm equals the audio tower
    (channels summed), with timm's frequency-major tokens put in fusionbench's time-major order."""
    vit = _vit(seed=5)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    model = _model("late")
    report = apply_init(model, _init(audio=str(tmp_path / "vit.pth")))
    spec = torch.randn(2, 1, 64, 64)  # (B, 1, mel, frames)
    with torch.no_grad():
        ref = vit.forward_features(spec.repeat(1, 3, 1, 1))  # (B, 1 + 4·4, D), frequency-major
        ref = torch.cat([ref[:, :1], ref[:, 1:].view(2, 4, 4, DIM).transpose(1, 2).reshape(2, 16, DIM)], 1)
        got = _audio_tower_tokens(model, spec)
    assert (got - ref).abs().max() <= 1e-5
    assert any("summed" in note for note in report.adapted)


def test_audiomae_layout_time_on_height(tmp_path):
    """AudioMAE: one channel, the spectrogram as (time, freq) with 8 frequency columns; timm on the transposed input."""
    vit = _vit(img=(64, 128), in_chans=1, seed=6)
    torch.save({"model": vit.state_dict()}, tmp_path / "audiomae.pth")
    model = _model("deepavfusion", audio_shape=(128, 64))
    report = apply_init(model, _init(audio=str(tmp_path / "audiomae.pth")))
    assert report.sources["audio"]["layout"] == "audiomae" and report.unused["audio"] == ["cls_token"]  # no CLS here
    spec = torch.randn(2, 1, 128, 64)  # (B, 1, mel, frames)
    with torch.no_grad():
        x = model.tokenizer.audio(spec)  # (B, 4·8, D), time-major
        for block in model.blocks["audio"]:
            x = block(x)
        got = model.norms["audio"](x)
        t = spec.transpose(2, 3)  # (B, 1, frames, mel): AudioMAE's orientation
        y = vit.patch_embed(t) + vit.pos_embed[:, 1:]
        ref = vit.norm(vit.blocks(y))
    assert (got - ref).abs().max() <= 1e-5


def test_ast_layout_prefix_grid_and_resampling(tmp_path):
    """AST: ``module.v.`` keys, CLS + distillation token, 12 frequency rows; the audio tokenizer equals a stride-16
    convolution plus the 12×T grid resampled by timm, read time-major."""
    torch.manual_seed(7)
    d, t0 = DIM, 20
    ast = {"cls_token": torch.randn(1, 1, d), "dist_token": torch.randn(1, 1, d),
           "pos_embed": torch.randn(1, 2 + 12 * t0, d), "patch_embed.proj.weight": torch.randn(d, 1, 16, 16) * 0.05,
           "patch_embed.proj.bias": torch.randn(d),
           **{k: v for k, v in _vit().state_dict().items() if k.startswith(("blocks", "norm"))}}
    state = {"module.v." + k: v for k, v in ast.items()} | {"module.mlp_head.1.weight": torch.randn(5, d)}
    torch.save(state, tmp_path / "ast.pth")
    model = _model("zorro", audio_shape=(128, 64))
    report = apply_init(model, _init(audio=str(tmp_path / "ast.pth")))
    assert report.sources["audio"]["layout"] == "ast"
    assert set(report.unused["audio"]) == {"cls_token", "dist_token", "mlp_head.1.weight"}  # zorro has no CLS
    spec = torch.randn(2, 1, 128, 64)
    pos = resample_abs_pos_embed(ast["pos_embed"], [8, 4], old_size=[12, t0], num_prefix_tokens=2)[:, 2:]  # (1, 32, D)
    pos = pos.view(1, 8, 4, d).transpose(1, 2).reshape(1, 32, d)  # time-major
    conv = F.conv2d(spec, ast["patch_embed.proj.weight"], ast["patch_embed.proj.bias"], stride=16)  # (B, D, 8, 4)
    ref = conv.permute(0, 3, 2, 1).reshape(2, 32, d) + pos  # (B, N_a, D): time-major
    with torch.no_grad():
        assert (model.tokenizer.audio(spec) - ref).abs().max() <= 1e-5


def test_vit_base_geometry_on_meta_covers_the_towers():
    """ViT-B/16 and DeiT-B distilled (meta device: shapes only) fill every parameter of an MBT base video tower."""
    with torch.device("meta"):
        model = create_model("mbt", 10, "base")
        for name in ("vit_base_patch16_224", "deit_base_distilled_patch16_224"):
            state = timm.create_model(name, pretrained=False).state_dict()
            ckpt = pretrained.ViTCheckpoint(name, "timm", state)
            entries, used, _ = pretrained.tower_state(ckpt, model, "video")
            pretrained.load_entries(model, entries, where=name)
            video = {k for k in model.state_dict() if "video" in k or k.startswith("towers.norm")}
            assert set(entries) == video, name
            heads = {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
            assert set(state) - set(used) <= {*heads, "dist_token"}


def test_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"\x00not a checkpoint" * 10)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{oops")
    for name in ("bad.pth", "bad.safetensors"):
        with pytest.raises(UserError, match="cannot read checkpoint"):
            apply_init(_model(), _init(video=str(tmp_path / name)))
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(UserError, match=r"not a ViT.*missing \d+ keys \(patch_embed.proj.weight"):
        apply_init(_model(), _init(video=str(tmp_path / "resnet.pth")))
    torch.save(_vit(init_values=1e-5).state_dict(), tmp_path / "layerscale.pth")
    with pytest.raises(UserError, match=r"ls1.gamma.*layer scale"):
        apply_init(_model(), _init(video=str(tmp_path / "layerscale.pth")))
    with pytest.raises(UserError, match=r"attn.qkv.weight is \(192, 64\), the model needs \(96, 32\)"):
        apply_init(_model(dim=32, heads=2), _init(video=str(tmp_path / "layerscale.pth")))
    with pytest.raises(UserError, match="not found"):
        apply_init(_model(), _init(video=str(tmp_path / "nope.pth")))


def test_init_model_is_strict(tmp_path):
    late = _model("late")
    torch.save(late.state_dict(), tmp_path / "late.pth")
    torch.save({"state_dict": {"model." + k: v for k, v in late.state_dict().items()}}, tmp_path / "late.ckpt")
    for name in ("late.pth", "late.ckpt"):
        other = _model("late")
        apply_init(other, _init(model=str(tmp_path / name)))
        assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), late.state_dict().values()))
    with pytest.raises(UserError, match="missing 1: bottleneck"):
        apply_init(_model("mbt"), _init(model=str(tmp_path / "late.pth")))
    with pytest.raises(UserError, match="mis-shaped"):
        apply_init(_model("late", dim=32, heads=2), _init(model=str(tmp_path / "late.pth")))


def test_shared_backbone_takes_blocks_from_video_and_the_audio_tokenizer_from_audio(tmp_path):
    v, a = _vit(seed=8), _vit(seed=9)
    torch.save(v.state_dict(), tmp_path / "v.pth")
    torch.save(a.state_dict(), tmp_path / "a.pth")
    model = _model("zorro")
    report = apply_init(model, _init(video=str(tmp_path / "v.pth"), audio=str(tmp_path / "a.pth")))
    assert torch.equal(model.blocks[0].mlp[0].weight, v.blocks[0].mlp.fc1.weight)
    assert torch.equal(model.norm.weight, v.norm.weight)
    assert torch.equal(model.tokenizer.audio.proj.bias, a.patch_embed.proj.bias)
    assert "blocks.0.mlp.fc1.weight" in report.unused["audio"] and report.unused["video"] == ["cls_token"]
    assert {"fusion_tokens", "readout_query.global", "heads_out.global.weight"} <= set(report.not_in_checkpoint)


def test_the_run_gets_tags_and_init_report_json(tmp_path):
    import json

    from fusionbench.init import log_init

    torch.save(_vit().state_dict(), tmp_path / "v.pth")
    model = _model("late")
    model.init_report = apply_init(model, _init(video=str(tmp_path / "v.pth")))

    from fusionbench import tracking

    store = str(tmp_path / "mlflow.db")
    mlflow_client = tracking.client(store)
    run_id = mlflow_client.create_run(tracking.ensure_experiment(store, "init")).info.run_id
    tracked = tracking.TrackedRun(mlflow_client, run_id, tracking.RunIdentity("late", "synth-joint", "x", 0))
    lines: list[str] = []
    log_init(tracked, model, log=lines.append)
    tags = mlflow_client.get_run(run_id).data.tags
    assert tags["init/video_layout"] == "timm" and len(tags["init/video_sha256"]) == 64
    assert tags["fb.init"] == "video=v.pth" and "fb.pretrain_run" not in tags  # no pretraining run made v.pth
    saved = json.loads((tracked.artifact_dir / "init_report.json").read_text())
    assert saved["not_in_checkpoint"] == model.init_report.not_in_checkpoint
    assert "towers.head.weight" in saved["not_in_checkpoint"]
    assert int(tags["init/loaded"]) + int(tags["init/not_in_checkpoint"]) == len(model.state_dict())
    assert lines and lines[0].startswith("init: video ← ")
