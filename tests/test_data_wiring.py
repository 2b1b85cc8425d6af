"""The data layer's wiring: every dataset through ``records_for`` (``data.dataset`` → reader, ``data.options`` checked
against it), ``data=<name>`` configs, geometry checked before decoding, leaderboard names, empty splits, and the data
in a run's identity (a changed clips.csv is a new run, not "already finished")."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from fusionbench import cli, sweep, tracking
from fusionbench.config import ConfigError, DataConfig, dataset_name, load_config
from fusionbench.data.datamodule import AVDataModule
from fusionbench.data.datasets import READERS, records_for
from fusionbench.data.fingerprint import data_fingerprint
from fusionbench.errors import UserError
from sweep_runners import fresh_store

DATA_CONFIGS = ("vggsound", "audioset", "kinetics", "kinetics_sounds", "epic_kitchens", "clips")


def test_every_dataset_has_a_reader_and_a_config() -> None:
    assert {"synth", "clips", *DATA_CONFIGS} == set(READERS)
    for name in DATA_CONFIGS:
        cfg = load_config([f"data={name}"])
        assert cfg.data.dataset == name and cfg.data.multilabel == (name == "audioset")


def test_data_shorthand_sets_the_data_layer_before_other_overrides(capsys) -> None:
    assert cli.main(["train", "data=vggsound", "data.root=/srv/VGGSound", "--print-config"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.data.dataset == "vggsound" and printed.data.root == "/srv/VGGSound"
    assert load_config(["data.root=/x", "data=vggsound"]).data.root == "/x"  # the overrides win, wherever written
    with pytest.raises(ConfigError, match=r"data='vgsound': no experiments/data/vgsound.yaml; available: .*vggsound"):
        load_config(["data=vgsound"])


def test_unknown_reader_option_is_a_config_error_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"data.options.templat is not an option of the vggsound reader; valid: "
                                          r"annotations, template, class_list"):
        load_config(["data=vggsound", "data.options.templat=x.mp4"])
    with pytest.raises(ConfigError, match=r"data.options.multilabel: set data.multilabel instead"):
        load_config(["data=clips", "data.options.multilabel=true"])
    with pytest.raises(ConfigError, match=r"data.dataset='vgg' is not one of synth, clips, vggsound"):
        load_config(["data.dataset=vgg"])
    assert load_config(["data=clips", "data.options.first_label=1"]).data.options.first_label == 1


@pytest.mark.parametrize("overrides, key", [
    (["data.video.size=48"], "model.video_patch"),
    (["data.audio.target_length=165"], "model.audio_patch"),
    (["data.video.size=224", "model.video_patch=[1,16,15]"], "model.video_patch"),
])
def test_geometry_is_checked_before_decoding(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}=\[.*\] does not divide the") as info:
        load_config(overrides)
    assert info.value.key == key
    load_config(["data.video.size=224", "model.video_patch=[1,16,16]"])  # a patch that divides it is fine


def test_two_datasets_never_share_a_leaderboard_name(tmp_path: Path) -> None:
    a, b = tmp_path / "one" / "data", tmp_path / "two" / "data"
    name_a = dataset_name(load_config(["data=clips", f"data.root={a}"]))
    name_b = dataset_name(load_config(["data=clips", f"data.root={b}"]))
    assert name_a.startswith("clips-data-") and name_b.startswith("clips-data-") and name_a != name_b
    assert dataset_name(load_config(["data=vggsound", "data.root=/srv/VGGSound"])) == "vggsound-VGGSound"
    assert dataset_name(load_config(["data=kinetics", "data.root=/srv/VGGSound"])) == "kinetics-VGGSound"
    assert dataset_name(load_config(["data.task=sync"])) == "synth-sync"


# ------------------------------------------------------------------------------------------- empty splits


def test_a_split_emptied_by_skipping_is_a_clear_error(tmp_path: Path, write_mp4) -> None:
    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for i in range(4):
        write_mp4(tmp_path / f"good{i}.mp4", rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8),
                  np.zeros(32000, np.float32))
        rows.append(f"good{i}.mp4,{i % 2},{'train' if i < 2 else 'test'}")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    rows += ["broken.mp4,0,val", "gone.mp4,1,val"]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {"dataset": "clips", "root": str(tmp_path),
                                                             "cache_dir": "", "on_error": "skip"})
    with pytest.raises(UserError, match=r"the val split is empty: 2 of its 2 clips were skipped; first: .*"):
        AVDataModule(cfg, decode_workers=1).setup()


# ------------------------------------------------------------------------------------------ run identity


def test_an_edited_clips_csv_is_a_new_run_not_already_finished(tmp_path: Path) -> None:
    """Regression: the sweep said "already finished" (with the old numbers) after a label changed in clips.csv."""
    root = tmp_path / "mine"
    root.mkdir()
    splits = ["train", "val", "test", "train"]
    text = "path,label,split\n" + "".join(f"c{i}.mp4,{'cat' if i % 2 else 'dog'},{splits[i % 4]}\n" for i in range(8))
    (root / "clips.csv").write_text(text)
    store = fresh_store(tmp_path / "results")
    grid = ["data=clips", f"data.root={root}", f"tracking.store={store}", "tracking.experiment=stale"]
    first = sweep.run_sweep(grid, workers=0, runner="sweep_runners:run", log=lambda line: None)
    assert len(first.finished) == 1
    assert len(sweep.run_sweep(grid, workers=0, runner="sweep_runners:run", log=lambda line: None).skipped) == 1
    before = data_fingerprint(load_config(grid).data)
    (root / "clips.csv").write_text(text.replace("c7.mp4,cat", "c7.mp4,dog"))  # one label edited
    assert data_fingerprint(load_config(grid).data) != before
    again = sweep.run_sweep(grid, workers=0, runner="sweep_runners:run", log=lambda line: None)
    assert len(again.finished) == 1 and not again.skipped
    on_error = data_fingerprint(load_config([*grid, "data.on_error=skip"]).data)
    assert on_error != data_fingerprint(load_config(grid).data)  # the error policy is part of the data


def test_a_planned_synthetic_set_keeps_its_identity_once_generated(tmp_path: Path) -> None:
    cfg = load_config([f"data.root={tmp_path}", "data.synth.num_clips=12"])
    planned = tracking.identity_of(cfg).key
    assert not list(tmp_path.iterdir())  # planning a run generates nothing
    records_for(cfg.data)  # generates the set
    assert (tmp_path / next(p.name for p in tmp_path.iterdir() if p.is_dir()) / "clips.csv").is_file()
    assert tracking.identity_of(cfg).key == planned
    assert tracking.identity_of(load_config([f"data.root={tmp_path}", "data.synth.num_clips=13"])).key != planned


# ------------------------------------------------------------------------------ a real run through a reader


@pytest.fixture(scope="module")
def vggsound_root(synth_cfg_at, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic set's mp4s under VGGSound names ``{ytid}_{start:06d}.mp4`` with a 4-column vggsound.csv
    (two classes by the synthetic label's parity; the synthetic test split is VGGSound's test, the rest train)."""
    import csv

    root = tmp_path_factory.mktemp("VGGSound")
    source = AVDataModule(synth_cfg_at("")).manifest_path.parent  # the session's tiny set (other variants may exist)
    rows = []
    with (source / "clips.csv").open() as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            ytid, start = f"vid{i:08d}", 10 * i
            shutil.copy(source / row["path"], root / f"{ytid}_{start:06d}.mp4")
            label = "heart sounds, heartbeat" if int(row["label"]) % 2 else "dog barking"
            rows.append([ytid, start, label, "test" if row["split"] == "test" else "train"])
    with (root / "vggsound.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root


def test_train_runs_through_the_vggsound_reader(vggsound_root: Path, tmp_path: Path, capsys) -> None:
    overrides = ["data=vggsound", f"data.root={vggsound_root}", "preset=tiny", "data.batch_size=8",
                 f"data.cache_dir={tmp_path / 'cache'}", "train.max_epochs=1", "train.progress=false",
                 "eval.conditions=[av]", f"tracking.store={tmp_path / 'mlflow.db'}", "tracking.experiment=vgg"]
    assert cli.main(["train", *overrides]) == 0
    cfg = load_config(overrides)
    runs = tracking.runs_frame(cfg.tracking.store, "vgg")
    row = runs.iloc[-1]
    assert row["status"] == "FINISHED" and row["tags.fb.dataset"] == f"vggsound-{vggsound_root.name}"
    assert row["metrics.data/num_classes"] == 2 and 0 <= row["metrics.test/av/top1"] <= 1
    dm = AVDataModule(cfg.data)
    assert dm.class_names == ["dog barking", "heart sounds, heartbeat"]
    splits = [c.split for c in dm.clips]
    assert splits.count("test") == 6 and splits.count("val") > 0  # val carved from train per YouTube id
    assert any("no val split" in r.reason for r in dm.records.report)


def test_reader_options_reach_the_reader(vggsound_root: Path, tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("heart sounds, heartbeat\ndog barking\ncat purring\n")
    cfg = load_config(["data=vggsound", f"data.root={vggsound_root}",
                       f"data.options.class_list={tmp_path / 'classes.txt'}"])
    records = records_for(cfg.data)
    assert records.class_names == ["heart sounds, heartbeat", "dog barking", "cat purring"]  # the list's order
    assert records.explicit_classes and tmp_path / "classes.txt" in records.sources
    assert any("'cat purring' of the class list matches no label" in r.reason for r in records.report)


def test_a_media_file_rewritten_changes_the_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "clips.csv").write_text("path,label,split\na.mp4,cat,train\nb.mp4,cat,test\nc.mp4,cat,val\n")
    (tmp_path / "a.mp4").write_bytes(b"x" * 10)
    cfg = load_config(["data=clips", f"data.root={tmp_path}"])
    before = data_fingerprint(cfg.data)
    assert data_fingerprint(cfg.data) == before  # cached, and stable
    (tmp_path / "a.mp4").write_bytes(b"y" * 11)
    records_before = before
    from fusionbench.data import fingerprint

    fingerprint._cache.clear()  # a new process (the cache re-uses a result while the annotations are unchanged)
    assert data_fingerprint(cfg.data) != records_before
