"""``fusionbench pretrain`` end to end on the tiny synthetic set (1 epoch, a real Lightning fit, a real MLflow store),
and the encoder checkpoint's round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fusionbench import cli, tracking
from fusionbench.config import ConfigError, load_config
from fusionbench.pretrain import save_encoder
from fusionbench.registry import create_model

GEOMETRY = {"audio_shape": (32, 160), "video_shape": (16, 32, 32)}


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("zorro", 10, "tiny", **GEOMETRY).eval()
    path = save_encoder(model, tmp_path / "encoder.pt")
    torch.manual_seed(1)  # another initialisation
    fresh = create_model("zorro", 10, "tiny", **GEOMETRY).eval()
    audio, video = torch.randn(2, 1, 32, 160), torch.randn(2, 3, 16, 32, 32)
    assert not torch.equal(fresh(audio, video).logits, model(audio, video).logits)
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert torch.equal(fresh(audio, video).logits, model(audio, video).logits)
    assert all(torch.equal(fresh.embed(audio, video)[r], z) for r, z in model.embed(audio, video).items())


def _overrides(tiny_synth_root: Path, tmp_path: Path) -> list[str]:
    return [
        "preset=tiny", f"data.root={tiny_synth_root}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.synth.num_clips=40", "data.batch_size=8", "train.max_epochs=1", "train.progress=false",
        f"tracking.store={tmp_path / 'mlflow.db'}",
    ]


@pytest.mark.parametrize("fusion, objective, metric", [
    pytest.param("zorro", "contrastive", "val/erank/fusion", marks=pytest.mark.slow),  # ~17 s with the decoding
    ("deepavfusion", "mae", "val/mse_video"),
])
def test_pretrain_cli_end_to_end(tiny_synth_root, tmp_path, capsys, fusion, objective, metric):
    overrides = _overrides(tiny_synth_root, tmp_path)
    assert cli.main(["pretrain", f"fusion={fusion}", f"objective={objective}", *overrides]) == 0
    assert "encoder checkpoint" in capsys.readouterr().out
    cfg = load_config([*overrides, f"pretrain.objective={objective}"])
    (run,) = tracking.search_all(cfg.tracking.store, cfg.tracking.experiment)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["fb.status"] == "finished" and tags["fb.kind"] == "pretrain" and tags["fb.objective"] == objective
    assert run.data.params["pretrain.objective"] == objective
    assert metric in metrics and torch.isfinite(torch.tensor(metrics["train/loss"]))
    if objective == "contrastive":
        assert {"val/align", "val/uniform/audio", "val/erank/audio", "val/erank/video"} <= set(metrics)
    state = torch.load(tags["fb.checkpoint"], weights_only=True)
    model = create_model(fusion, 16, "tiny", **GEOMETRY)
    model.load_state_dict(state, strict=True)  # the encoder, at the data's geometry and class count


def test_pretrain_refuses_a_bad_objective(tiny_synth_root, tmp_path):
    with pytest.raises(ConfigError, match="pretrain.objective"):
        from fusionbench.pretrain import run

        run(load_config([*_overrides(tiny_synth_root, tmp_path), "pretrain.objective=none"]))
    with pytest.raises(ConfigError, match="supports deepavfusion"):
        run(load_config([*_overrides(tiny_synth_root, tmp_path), "fusion=early", "pretrain.objective=mae"]))


def test_a_supervised_run_refuses_pretrain_keys():
    with pytest.raises(ConfigError, match=r"pretrain\.temperature=0\.1 set for a supervised run"):
        load_config(["pretrain.temperature=0.1"])
    load_config(["pretrain.objective=contrastive", "pretrain.temperature=0.1"])  # a pretraining run takes them


def test_probe_rows_carry_the_protocol_and_the_pretraining_run(tiny_synth_root, tmp_path, capsys):
    """A probe of a pretraining run's encoder is traced to that run by the file's sha256 (here a moved copy), and the
    runs table tells it apart from the random-encoder probe and the fine-tuned run (tags fb.protocol / fb.init)."""
    import shutil

    from fusionbench.reports.runs import finished_runs, runs_table

    overrides = _overrides(tiny_synth_root, tmp_path)
    assert cli.main(["pretrain", "fusion=deepavfusion", "objective=mae", *overrides]) == 0
    cfg = load_config(overrides)
    (pre,) = tracking.search_all(cfg.tracking.store, cfg.tracking.experiment)
    moved = tmp_path / "elsewhere" / "encoder.pt"
    moved.parent.mkdir()
    shutil.copy(pre.data.tags["fb.checkpoint"], moved)
    probe = ["fusion=deepavfusion", "train.protocol=linear_probe", "eval.conditions=[av]", *overrides]
    assert cli.main(["train", *probe, f"init.model={moved}"]) == 0
    assert cli.main(["train", *probe]) == 0
    assert cli.main(["train", "fusion=deepavfusion", "eval.conditions=[av]", *overrides]) == 0
    capsys.readouterr()
    runs = tracking.runs_frame(cfg.tracking.store, cfg.tracking.experiment)
    linked = runs[runs["tags.fb.init"].str.startswith("pretrain:", na=False)]
    assert list(linked["tags.fb.pretrain_run"]) == [pre.info.run_id]
    table = runs_table(finished_runs(cfg.tracking.store, cfg.tracking.experiment))
    av = table[table["condition"] == "av"]
    assert sorted(zip(av["protocol"], av["init"])) == sorted([
        ("linear_probe", f"pretrain:{pre.info.run_id}"), ("linear_probe", "random"), ("finetune", "random")])
    assert av["config_hash"].nunique() == 3  # three leaderboard entries, never averaged together
