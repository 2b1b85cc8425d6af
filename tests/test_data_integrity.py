"""The integrity rules (fusionbench/data/integrity.py) and the clips.csv reader's label and path rules: no leaked
split, no duplicate across splits, no untrained class, no silent re-indexing, no path outside the root."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fusionbench.config import DataConfig
from fusionbench.data import integrity
from fusionbench.data.datamodule import AVDataModule
from fusionbench.data.manifest import Clip
from fusionbench.errors import UserError


def _clips_cfg(root: Path, **overrides):
    return OmegaConf.merge(OmegaConf.structured(DataConfig),
                           {"dataset": "clips", "root": str(root), "cache_dir": "", **overrides})


def _records(root: Path, text: str, **overrides):
    (root / "clips.csv").write_text(text)
    return AVDataModule(_clips_cfg(root, **overrides))._read_manifest()


def _clip(path: str, label: int, split: str | None = None, group: str | None = None, line: int = 2,
          start: float = 0.0) -> Clip:
    return Clip(Path(path), (label,), split, start, None, {"group": group or path, "line": line, "source": "c.csv"})


# ------------------------------------------------------------------------------------------------- leakage


def test_segments_of_one_video_share_a_split(tmp_path: Path) -> None:
    """Regression: a ``<video>/segK.mp4`` layout without splits; per-file hashing put siblings of every test clip
    in train."""
    rows = "".join(f"v{v:02d}/seg{k}.mp4,{v % 2}\n" for v in range(40) for k in range(4))
    clips = _records(tmp_path, "path,label\n" + rows)
    by_video: dict[str, set[str]] = {}
    for clip in clips:
        by_video.setdefault(clip.path.parent.name, set()).add(clip.split)
    assert all(len(splits) == 1 for splits in by_video.values()), by_video
    assert {s for splits in by_video.values() for s in splits} == {"train", "val", "test"}


def test_group_column_and_youtube_ids_group_clips(tmp_path: Path) -> None:
    rows = "".join(f"flat/{v:011d}_{10 * k:06d}.mp4,{v % 2},\n" for v in range(30) for k in range(3))
    rows += "".join(f"x{i}.mp4,{i % 2},g{i // 5}\n" for i in range(60))
    clips = _records(tmp_path, "path,label,group\n" + rows)
    groups: dict[str, set[str]] = {}
    for clip in clips:
        groups.setdefault(clip.extras["group"], set()).add(clip.split)
    assert len(groups) == 30 + 12 and all(len(s) == 1 for s in groups.values())
    assert integrity.file_group(tmp_path / "dQw4w9WgXcQ_000030.mp4", tmp_path) == "dQw4w9WgXcQ"
    assert integrity.file_group(tmp_path / "a.mp4", tmp_path) == "a"  # a file in the root: its own video
    assert integrity.file_group(tmp_path / "dog" / "a.mp4", tmp_path, "dog") == "dog/a"  # by-class folders


def test_assign_splits_hashes_the_group_not_the_file() -> None:
    clips = [_clip(f"/d/v{i // 4}/s{i % 4}.mp4", 0, group=f"v{i // 4}") for i in range(400)]
    out = integrity.assign_splits(clips, 0.15, 0.15)
    assert out == integrity.assign_splits(clips, 0.15, 0.15)
    assert {tuple({c.split for c in out[i:i + 4]}) for i in range(0, 400, 4)} <= {("train",), ("val",), ("test",)}
    counts = [sum(c.split == s for c in out) for s in ("train", "val", "test")]
    assert 200 < counts[0] and 20 < counts[1] < 120 and 20 < counts[2] < 120
    given = integrity.assign_splits([_clip("/d/a.mp4", 0, "val")], 0.0, 0.99)
    assert given[0].split == "val"  # a given split is kept


def test_a_missing_val_split_is_carved_from_train_per_group() -> None:
    clips = [_clip(f"/d/{i}.mp4", i % 2, "train", group=f"v{i // 2}") for i in range(200)]
    clips += [_clip(f"/d/t{i}.mp4", i % 2, "test") for i in range(20)]
    out, report = integrity.carve_missing_splits(clips, 0.2, 0.1)
    moved = [c for c in out if c.split == "val"]
    assert 10 < len(moved) < 80 and [r.status for r in report] == ["warning"] and "no val split" in report[0].reason
    assert all(c.extras["group"].startswith("v") for c in moved)
    assert len({c.split for c in out if c.extras["group"] == moved[0].extras["group"]}) == 1


def test_exact_duplicates_are_dropped_and_reported() -> None:
    clips = [_clip("/d/a.mp4", 0, "train", line=2), _clip("/d/b.mp4", 1, "train", line=3),
             _clip("/d/a.mp4", 0, "train", line=4)]
    out, report = integrity.drop_duplicates(clips, "c.csv")
    assert [c.extras["line"] for c in out] == [2, 3]
    assert len(report) == 1 and report[0].status == "skipped" and "c.csv, line 2" in report[0].reason
    assert report[0].where == "c.csv, line 4"
    other_window = [*clips[:2], _clip("/d/a.mp4", 0, "test", line=4, start=5.0)]
    assert len(integrity.drop_duplicates(other_window)[0]) == 3  # another window of the file is another clip


@pytest.mark.parametrize("second, message", [
    (dict(label=0, split="test"), r"two splits \(train and test\): c.csv, line 2 and c.csv, line 4"),
    (dict(label=1, split="train"), r"twice with different labels .*c.csv, line 2 and c.csv, line 4"),
])
def test_one_file_in_two_splits_or_with_two_labels_is_refused(second: dict, message: str) -> None:
    clips = [_clip("/d/a.mp4", 0, "train", line=2), _clip("/d/a.mp4", second["label"], second["split"], line=4)]
    with pytest.raises(UserError, match=message):
        integrity.drop_duplicates(clips)


def test_duplicates_in_a_clips_csv_through_the_datamodule(tmp_path: Path) -> None:
    text = "path,label,split\na.mp4,cat,train\nb.mp4,dog,train\na.mp4,cat,train\nc.mp4,cat,test\nd.mp4,dog,val\n"
    (tmp_path / "clips.csv").write_text(text)
    dm = AVDataModule(_clips_cfg(tmp_path))
    assert [c.path.name for c in dm.clips] == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert [r.status for r in dm.records.report] == ["skipped"]
    (tmp_path / "clips.csv").write_text(text.replace("a.mp4,cat,train\nc.mp4", "a.mp4,cat,test\nc.mp4"))
    with pytest.raises(UserError, match=r"clips.csv, line 2 and .*clips.csv, line 4"):
        AVDataModule(_clips_cfg(tmp_path)).clips


# --------------------------------------------------------------------------------------------------- labels


def test_a_class_only_in_test_is_an_error_or_with_a_class_list_a_warning(tmp_path: Path) -> None:
    text = "path,label,split\na.mp4,cat,train\nb.mp4,dog,train\nc.mp4,cat,val\nd.mp4,bird,test\n"
    with pytest.raises(UserError, match=r"class\(es\) in val/test have no training clip \('bird'\)"):
        _records(tmp_path, text)
    (tmp_path / "classes.txt").write_text("dog\ncat\nbird\n")
    dm = AVDataModule(_clips_cfg(tmp_path, options={"class_list": "classes.txt"}))
    assert dm.class_names == ["dog", "cat", "bird"]  # the class list fixes the index order
    assert [c.labels for c in dm.clips] == [(1,), (0,), (1,), (2,)]
    (warning,) = [r for r in dm.records.report if r.status == "warning"]
    assert "'bird' has no training clip" in warning.reason and warning.split == "test"


@pytest.mark.parametrize("labels, message", [
    ("0 1 dog 1", r"mixed integer and text labels \(line 2: '0', line 4: 'dog'\)"),
    ("0 5 9 5", r"sparse integer labels \(0, 5, 9: 3 of 10 indices used\).*class_list"),
    ("1 2 3 1", r"integer labels run 1\.\.3: index 0 would be a class with no clip; .*first_label: 1"),
])
def test_integer_labels_are_never_silently_reindexed(tmp_path: Path, labels: str, message: str) -> None:
    rows = "".join(f"c{i}.mp4,{label},train\n" for i, label in enumerate(labels.split()))
    with pytest.raises(UserError, match=message):
        _records(tmp_path, "path,label,split\n" + rows)


def test_labels_from_one_with_first_label_or_a_class_list(tmp_path: Path) -> None:
    rows = "path,label,split\n" + "".join(f"c{i}.mp4,{label},train\n" for i, label in enumerate((1, 2, 3, 1)))
    (tmp_path / "clips.csv").write_text(rows)
    dm = AVDataModule(_clips_cfg(tmp_path, options={"first_label": 1}))
    assert dm.class_names == ["1", "2", "3"] and [c.labels for c in dm.clips] == [(0,), (1,), (2,), (0,)]
    (tmp_path / "names.txt").write_text("zero\none\ntwo\nthree\n")
    sparse = "path,label,split\n" + "".join(f"c{i}.mp4,{label},train\n" for i, label in enumerate((0, 3, 3)))
    (tmp_path / "clips.csv").write_text(sparse)
    dm = AVDataModule(_clips_cfg(tmp_path, options={"class_list": "names.txt"}))
    assert dm.class_names == ["zero", "one", "two", "three"] and [c.labels for c in dm.clips] == [(0,), (3,), (3,)]


# ---------------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("path, message", [
    ("../outside.mp4", r"escapes the root \('\.\.' refused\)"),
    ("sub/../../outside.mp4", r"escapes the root"),
    ("/abs/clip.mp4", r"absolute media path '/abs/clip.mp4' refused .*allow_absolute"),
    ("list.m3u8", r"is not a media file"),
    ("concat.ffconcat", r"is not a media file"),
])
def test_paths_stay_inside_the_root_and_are_media(tmp_path: Path, path: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        _records(tmp_path, f"path,label,split\nok.mp4,cat,train\n{path},cat,train\n")
    assert "clips.csv, line 3" in str(info.value)


def test_absolute_paths_where_the_config_allows_them(tmp_path: Path) -> None:
    clips = _records(tmp_path, "path,label,split\n/abs/clip.mp4,cat,train\nsub/./b.mp4,cat,train\n",
                     options={"allow_absolute": True})
    assert [c.path for c in clips] == [Path("/abs/clip.mp4"), tmp_path / "sub" / "b.mp4"]
    with pytest.raises(UserError, match="is not a media file"):
        _records(tmp_path, "path,label\n/abs/list.m3u8,cat\n", options={"allow_absolute": True})


def test_a_clips_csv_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "clips.csv").write_bytes(b"path,label,split\na.mp4,cat,train\nb.mp4,caf\xe9,train\n")
    with pytest.raises(UserError, match=r"not UTF-8 .*") as info:
        AVDataModule(_clips_cfg(tmp_path)).clips
    assert "clips.csv, line 3" in str(info.value)
