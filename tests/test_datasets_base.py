"""The shared reader rules: paths stay inside the root and name media, non-UTF-8 names the line, the registry."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusionbench.data.datasets import READERS, read_dataset
from fusionbench.data.datasets.base import csv_rows, media_path, timestamp_seconds
from fusionbench.errors import UserError


@pytest.mark.parametrize("rel", ["../outside.mp4", "a/../../outside.mp4", "/etc/passwd.mp4", "..", "C:/x.mp4"])
def test_media_path_refuses_escapes(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UserError, match="refused"):
        media_path(tmp_path, rel, "m.csv, line 2")


def test_media_path_resolves_inside_root(tmp_path: Path) -> None:
    assert media_path(tmp_path, "a/./b/../c.MP4", "x") == tmp_path / "a" / "c.MP4"


@pytest.mark.parametrize("rel", ["list.m3u8", "join.ffconcat", "clip.txt", "noext"])
def test_media_path_refuses_playlists_and_non_media(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UserError, match="not a media file"):
        media_path(tmp_path, rel, "x")


def test_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"a,1\nb,2\ncaf\xe9,3\n")  # Latin-1 on line 3
    with pytest.raises(UserError) as err:
        list(csv_rows(path))
    assert err.value.where == f"{path}, line 3" and "not UTF-8" in err.value.reason


def test_comment_lines_skipped_with_line_numbers_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b'# a "quote in a comment\n\nx, 1, "p,q"\n')
    assert list(csv_rows(path, skip_comments=True, skipinitialspace=True)) == [(3, ["x", "1", "p,q"])]


def test_timestamps() -> None:
    assert timestamp_seconds("00:00:03.37", "t", "x") == pytest.approx(3.37)
    assert timestamp_seconds("01:02:03.089", "t", "x") == pytest.approx(3723.089)
    with pytest.raises(UserError, match="HH:MM:SS"):
        timestamp_seconds("3.37", "start_timestamp", "x")


def test_registry_and_option_check(tmp_path: Path) -> None:
    assert set(READERS) == {"synth", "clips", "vggsound", "audioset", "kinetics", "kinetics_sounds", "epic_kitchens"}
    with pytest.raises(UserError, match="templ.*valid: annotations, template"):
        read_dataset("vggsound", tmp_path, templ="{ytid}.mp4")
    with pytest.raises(UserError, match="unknown dataset 'vgg'"):
        read_dataset("vgg", tmp_path)


@pytest.mark.parametrize("name, files, bad", [
    ("vggsound", {"vggsound.csv": b"abcdefghijk,1,caf\xe9,train\n"}, "vggsound.csv, line 1"),
    ("audioset", {"class_labels_indices.csv": b'index,mid,display_name\n0,/m/09x0r,"Sp\xe9ech"\n',
                  "balanced_train_segments.csv": b""}, "class_labels_indices.csv, line 2"),
    ("kinetics", {"annotations/train.csv": b"label,youtube_id,time_start,time_end,split\n\n\nx\xff,a,0,1,train\n"},
     "train.csv, line 4"),
    ("epic_kitchens", {"EPIC_100_train.csv": b"video_id\n\xc3\x28\n"}, "EPIC_100_train.csv, line 2"),
])
def test_each_reader_names_the_non_utf8_line(tmp_path: Path, name: str, files: dict[str, bytes], bad: str) -> None:
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    with pytest.raises(UserError, match="not UTF-8") as err:
        read_dataset(name, tmp_path, check_files=False)
    assert str(err.value.where).endswith(bad)


def test_sources_list_every_file_read(tmp_path: Path) -> None:
    """The run identity hashes these: editing a class list must change it, so it must be listed."""
    (tmp_path / "vggsound.csv").write_bytes(b"abcdefghijk,1,x,train\n")
    (tmp_path / "classes.txt").write_bytes(b"x\n")
    recs = read_dataset("vggsound", tmp_path, class_list="classes.txt", check_files=False)
    assert recs.sources == [tmp_path / "vggsound.csv", tmp_path / "classes.txt"]
