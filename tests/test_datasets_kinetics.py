"""Kinetics reader on CSVs in the CVDF format (quoted labels, optional is_cc), both file layouts, Kinetics-Sounds."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusionbench.data.datasets import read_dataset
from fusionbench.errors import UserError

TRAIN_CSV = (
    "label,youtube_id,time_start,time_end,split\n"
    "abseiling,---QUuC4vJs,84,94,train\n"
    '"air drumming",--nQbRBEz2s,104,114,train\n'
    "playing bagpipes,-0n5d_3FBEk,0,10,train\n"
)
VAL_CSV = (  # the K700 / crawler form with the sixth column
    "label,youtube_id,time_start,time_end,split,is_cc\n"
    '"air drumming",_dbcJuKJQNs,40,50,val,0\n'
    "playing bagpipes,-1AbCdEfGhI,12,22,val,1\n"
)
TEST_CSV = "youtube_id,time_start,time_end,split\n-2XyZaBcDeF,5,15,test\n"  # unlabelled test set


def _kinetics(root: Path, by_class: bool = False, skip: tuple[str, ...] = ()) -> Path:
    (root / "annotations").mkdir()
    for name, text in (("train", TRAIN_CSV), ("val", VAL_CSV), ("test", TEST_CSV)):
        (root / "annotations" / f"{name}.csv").write_bytes(text.encode())
        for row in text.splitlines()[1:]:
            fields = row.replace('"', "").split(",")
            if name == "test" or fields[1] in skip:
                continue
            label, ytid, start, end, split = fields[:5]
            folder = root / split / (label if by_class else "")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{ytid}_{int(start):06d}_{int(end):06d}.mp4").touch()
    return root


def test_flat_layout(tmp_path: Path) -> None:
    recs = read_dataset("kinetics", _kinetics(tmp_path))
    assert recs.class_names == ["abseiling", "air drumming", "playing bagpipes"]
    assert [c.path.relative_to(tmp_path).as_posix() for c in recs.clips[:2]] == [
        "train/---QUuC4vJs_000084_000094.mp4", "train/--nQbRBEz2s_000104_000114.mp4"]
    assert [c.labels[0] for c in recs.clips] == [0, 1, 2, 1, 2]
    assert [c.split for c in recs.clips] == ["train"] * 3 + ["val"] * 2
    assert recs.clips[3].extras["group"] == "_dbcJuKJQNs" and recs.clips[3].extras["is_cc"] == "0"
    assert [r.status for r in recs.report] == ["warning"] and "no label column" in recs.report[0].reason


def test_by_class_layout_matches_on_the_youtube_id(tmp_path: Path) -> None:
    recs = read_dataset("kinetics", _kinetics(tmp_path, by_class=True))
    assert recs.clips[1].path == tmp_path / "train" / "air drumming" / "--nQbRBEz2s_000104_000114.mp4"
    assert len(recs.clips) == 5 and recs.counts() == {"warning": 1}


def test_by_class_folder_renamed_still_found(tmp_path: Path) -> None:
    _kinetics(tmp_path, by_class=True)
    (tmp_path / "train" / "air drumming").rename(tmp_path / "train" / "air_drumming")
    (tmp_path / "train" / "air_drumming" / "--nQbRBEz2s_000104_000114.mp4").rename(
        tmp_path / "train" / "air_drumming" / "--nQbRBEz2s.mp4")  # a downloader that names files by id only
    recs = read_dataset("kinetics", tmp_path)
    assert recs.clips[1].path == tmp_path / "train" / "air_drumming" / "--nQbRBEz2s.mp4"


def test_another_window_of_the_same_video_is_not_a_match(tmp_path: Path) -> None:
    _kinetics(tmp_path, by_class=True)
    folder = tmp_path / "train" / "air drumming"
    (folder / "--nQbRBEz2s_000104_000114.mp4").rename(folder / "--nQbRBEz2s_000000_000010.mkv")
    recs = read_dataset("kinetics", tmp_path)
    assert [r.path for r in recs.report if r.status == "missing"] == [
        str(tmp_path / "train" / "--nQbRBEz2s_000104_000114.mp4")]
    (folder / "--nQbRBEz2s_000000_000010.mkv").rename(folder / "--nQbRBEz2s_000104_000114.webm")
    assert read_dataset("kinetics", tmp_path).clips[1].path == folder / "--nQbRBEz2s_000104_000114.webm"


def test_missing_clips_reported(tmp_path: Path) -> None:
    recs = read_dataset("kinetics", _kinetics(tmp_path, skip=("--nQbRBEz2s", "_dbcJuKJQNs")))
    assert len(recs.clips) == 3 and recs.counts() == {"missing": 2, "warning": 1}
    missing = [r for r in recs.report if r.status == "missing"]
    assert [(r.split, r.label) for r in missing] == [("train", "air drumming"), ("val", "air drumming")]


def test_kinetics_sounds_class_list(tmp_path: Path) -> None:
    _kinetics(tmp_path)
    (tmp_path / "ks.txt").write_bytes(b"playing bagpipes\nair_drumming\nblowing out\n")
    recs = read_dataset("kinetics_sounds", tmp_path, class_list="ks.txt")
    assert recs.class_names == ["playing bagpipes", "air_drumming", "blowing out"]
    assert [c.labels[0] for c in recs.clips] == [1, 0, 1, 0]  # abseiling rows left out
    warnings = [r for r in recs.report if r.status == "warning"]
    assert [r.label for r in warnings if "matches no label" in r.reason] == ["blowing out"]
    assert any("1 rows of classes outside the class list" in r.reason for r in warnings)
    assert [p.name for p in recs.sources] == ["train.csv", "val.csv", "test.csv", "ks.txt"]


def test_kinetics_sounds_without_any_match_is_an_error(tmp_path: Path) -> None:
    _kinetics(tmp_path)
    (tmp_path / "ks.txt").write_bytes(b"tapping pen\nblowing nose\n")
    with pytest.raises(UserError, match="ks.txt: none of the 2 classes matches a label"):
        read_dataset("kinetics_sounds", tmp_path, class_list="ks.txt")
    with pytest.raises(UserError, match="needs data.class_list"):
        read_dataset("kinetics_sounds", tmp_path)


def test_columns_by_header_name_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"youtube_id,split,label,time_end,time_start\nabcdefghijk,train,x,10,0\n")
    recs = read_dataset("kinetics", tmp_path, annotations={"train": "a.csv"}, check_files=False)
    assert recs.clips[0].path == tmp_path / "train" / "abcdefghijk_000000_000010.mp4"
    (tmp_path / "b.csv").write_bytes(b"label,youtube_id,time_start,time_end,split\nx,abcdefghijk,10,5,train\n")
    with pytest.raises(UserError, match="b.csv, line 2: bad window"):
        read_dataset("kinetics", tmp_path, annotations={"train": "b.csv"}, check_files=False)
    (tmp_path / "c.csv").write_bytes(
        b'label,youtube_id,time_start,time_end,split\n"a/../../../x",abcdefghijk,0,10,train\n')
    with pytest.raises(UserError, match="c.csv, line 2: media path .* escapes the root"):
        read_dataset("kinetics", tmp_path, annotations={"train": "c.csv"}, template="{split}/{label}/{ytid}.mp4",
                     check_files=False)
