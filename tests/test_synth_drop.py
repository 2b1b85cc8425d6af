"""data.synth.drop_p / drop_mode / drop_splits: a fraction of the chosen splits' clips loses one modality (an absent
stream in the mp4, or a pure-noise one), the rest are clean, and the setting is part of the data's identity."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fusionbench.config import ConfigError, DataConfig, config_hash, dataset_name, load_config
from fusionbench.data import synthetic as S
from fusionbench.data.datasets.synth import set_dir, synth_request
from fusionbench.data.fingerprint import data_fingerprint, identity_hash
from fusionbench.data.media import decode_clip


def test_only_the_chosen_splits_drop_and_at_rate_q():
    spec, params = S.TASKS["joint"], S.render_params(S.TASKS["joint"])
    q, n = 0.4, 2000
    every = S.make_factors(spec, n, 0, params, drop_p=q)  # the functions' default: noise in every split
    train = S.make_factors(spec, n, 0, params, drop_p=q, drop_mode="absent", drop_splits=("train",))
    assert all(f.drop == "" for f in train if f.split != "train")
    # the same clips drop the same modality whichever splits are dropped (the draws do not depend on it)
    assert [f.drop for f in train if f.split == "train"] == [f.drop for f in every if f.split == "train"]
    dropped = [f.drop for f in train if f.split == "train"]
    rate = sum(d != "" for d in dropped) / len(dropped)
    assert abs(rate - q) < 4 * (q * (1 - q) / len(dropped)) ** 0.5  # 1,400 training clips: q ± 4σ
    n_dropped = sum(d != "" for d in dropped)
    assert abs(dropped.count("audio") - dropped.count("video")) < 4 * n_dropped**0.5  # audio or video, 50/50
    assert {f.drop_mode for f in train} == {"absent"}


@pytest.mark.parametrize("mode", ["absent", "noise"])
def test_written_clips_lack_the_stream_or_carry_noise(tmp_path: Path, mode: str):
    out = tmp_path / mode
    S.generate("joint", 24, 0, out, drop_p=0.5, drop_mode=mode, drop_splits=("train", "test"), val_frac=0.25,
               test_frac=0.25, progress=False)
    rows = list(csv.DictReader((out / "clips.csv").open()))
    assert {r["drop"] for r in rows if r["split"] == "val"} == {""}
    assert {r["drop"] for r in rows if r["split"] != "val"} >= {"audio", "video"}
    for r in rows:
        clip = decode_clip(str(out / r["path"]), num_frames=16, size=32, sample_rate=16000, clip_seconds=2.0,
                           allow_missing_audio=True, allow_missing_video=True)
        if mode == "absent":  # the reader reports the missing stream: the batch will mark it absent
            assert (clip.audio_present, clip.video_present) == (r["drop"] != "audio", r["drop"] != "video"), r
        else:  # destroyed: both streams are there, nothing marks the noise
            assert clip.audio_present and clip.video_present
    if mode == "absent":
        with pytest.raises(Exception, match="no audio stream"):
            decode_clip(str(out / next(r["path"] for r in rows if r["drop"] == "audio")), num_frames=16, size=32,
                        sample_rate=16000, clip_seconds=2.0)


def _data(**synth) -> OmegaConf:
    cfg = OmegaConf.structured(DataConfig)
    for key, value in synth.items():
        OmegaConf.update(cfg, f"synth.{key}", value)
    return cfg


def test_drop_settings_are_part_of_the_data_identity(tmp_path: Path):
    clean, dropped = _data(), _data(drop_p=0.5)
    assert data_fingerprint(clean) != data_fingerprint(dropped)
    noise = _data(drop_p=0.5, drop_mode="noise")
    test_too = _data(drop_p=0.5, drop_splits=["train", "test"])
    prints = {data_fingerprint(c) for c in (dropped, noise, test_too)}
    assert len(prints) == 3  # mode and splits each change the data
    dirs = {set_dir(tmp_path, synth_request(c)) for c in (clean, dropped, noise, test_too)}
    assert len(dirs) == 4  # a variant never overwrites another set
    # at drop_p = 0 the mode and splits change nothing: the clean set keeps its folder, record and identity
    assert "drop_mode" not in synth_request(clean)
    assert data_fingerprint(_data(drop_mode="noise")) == data_fingerprint(clean)
    assert set_dir(tmp_path, synth_request(_data(drop_mode="noise"))) == tmp_path / "joint"
    # the run identity and the leaderboard name change with them
    base, robust = load_config([]), load_config(["data.synth.drop_p=0.5", "data.synth.drop_mode=noise",
                                                 "data.synth.drop_splits=[train,val,test]"])
    assert identity_hash(base) != identity_hash(robust) and config_hash(base) != config_hash(robust)
    assert (dataset_name(base), dataset_name(robust)) == ("synth-joint", "synth-joint-drop0.5-noise-train+val+test")
    assert dataset_name(load_config(["data.synth.drop_p=0.25"])) == "synth-joint-drop0.25"
    assert config_hash(load_config(["data.synth.drop_mode=absent"])) == config_hash(base)  # the default
    with pytest.raises(ConfigError, match="data.synth.drop_mode='gone' is not one of absent, noise"):
        load_config(["data.synth.drop_mode=gone"])
    with pytest.raises(ConfigError, match="data.synth.drop_splits"):
        load_config(["data.synth.drop_splits=[train,dev]"])


def test_absent_training_clips_reach_the_batch_as_absent(synth_cfg):
    """Through the datamodule: the dropped training clips are marked absent (not silence), the test split is clean."""
    from fusionbench.data.datamodule import AVDataModule

    dm = AVDataModule(synth_cfg(**{"synth.drop_p": 0.5}), decode_workers=1)
    dm.prepare_data()
    dm.setup("fit")
    rows = {r["path"]: r for r in csv.DictReader(dm.manifest_path.open())}
    train = dm.dataset("train")
    missing = int((~train.audio_present).sum() + (~train.video_present).sum())
    expected = sum(r["drop"] != "" for r in rows.values() if r["split"] == "train")
    assert missing == expected > 0
    test = dm.dataset("test")
    assert bool(test.audio_present.all()) and bool(test.video_present.all())


def test_the_robust_blocks_state_their_known_answers():
    """experiments/benchmark-extended.yaml's robust blocks: each is its own dataset, and the leaderboard prints a
    known answer above its table (synthetic.KNOWN_ANSWERS, through reports.markdown.known_answer_lines)."""
    from fusionbench.cli import grid_from_experiment
    from fusionbench.config import EXPERIMENTS
    from fusionbench.reports.markdown import known_answer_lines
    from fusionbench.sweep import expand_grids, plan

    path = EXPERIMENTS / "benchmark-extended.yaml"
    cells = plan(expand_grids(grid_from_experiment(str(path), [])), path)
    robust = {dataset_name(c.cfg) for c in cells if c.cfg.data.synth.drop_p > 0}
    assert robust == {"synth-paired-drop0.5-noise-train+val+test", "synth-paired-drop0.5"}
    for name in robust:
        assert known_answer_lines(name) and known_answer_lines(name)[0].startswith("Known answer: half the")
    assert S.unimodal_ceiling("paired", 0.5) == 0.8125  # the ceiling block 1's answer quotes: 1 - q/2 + q/2 · 1/4
