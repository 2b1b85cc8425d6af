"""VGGSound reader on ``vggsound.csv`` written byte-for-byte in the published format (no header, quoted labels)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusionbench.data.datasets import read_dataset
from fusionbench.errors import UserError

# The two rows quoted in the dataset's description, plus train rows in the same format.
VGGSOUND_CSV = (
    "---g-f_I2yQ,1,people marching,test\n"
    '0_8-g2rof7E,49,"heart sounds, heartbeat",test\n'
    "FwVYUHKoLtQ,34,people marching,train\n"
    'glLQrEijrKg,300,"heart sounds, heartbeat",train\n'
    "zzzzzzzzzzz,0,playing hammond organ,train\n"
)


def _set(root: Path, csv_text: str = VGGSOUND_CSV, present: tuple[str, ...] | None = None, ext: str = "mp4") -> Path:
    (root / "vggsound.csv").write_bytes(csv_text.encode())
    names = present if present is not None else [
        f"{r.split(',')[0]}_{int(r.split(',')[1]):06d}.{ext}" for r in csv_text.splitlines()
    ]
    for name in names:
        (root / name).touch()
    return root


def test_four_column_csv_with_quoted_comma_label(tmp_path: Path) -> None:
    recs = read_dataset("vggsound", _set(tmp_path))
    assert recs.class_names == ["heart sounds, heartbeat", "people marching", "playing hammond organ"]
    assert not recs.multilabel and recs.report == []
    first, second = recs.clips[:2]
    assert first.path == tmp_path / "---g-f_I2yQ_000001.mp4" and first.labels == (1,) and first.split == "test"
    assert second.path == tmp_path / "0_8-g2rof7E_000049.mp4" and second.labels == (0,)
    assert second.extras["group"] == "0_8-g2rof7E" and (second.start_s, second.end_s) == (0.0, None)
    assert [c.split for c in recs.clips] == ["test", "test", "train", "train", "train"]


def test_wav_template_and_untrimmed_window(tmp_path: Path) -> None:
    recs = read_dataset("vggsound", _set(tmp_path, ext="wav"), template="{ytid}_{start:06d}.wav", untrimmed=True)
    assert recs.clips[2].path.name == "FwVYUHKoLtQ_000034.wav"
    assert (recs.clips[2].start_s, recs.clips[2].end_s) == (34.0, 44.0)


def test_missing_files_are_counted_and_reported(tmp_path: Path) -> None:
    _set(tmp_path, present=("---g-f_I2yQ_000001.mp4", "FwVYUHKoLtQ_000034.mp4"))
    recs = read_dataset("vggsound", tmp_path)
    assert len(recs.clips) == 2 and recs.counts() == {"missing": 3}
    row = recs.report[0]
    assert row.path == str(tmp_path / "0_8-g2rof7E_000049.mp4") and row.where.endswith("vggsound.csv, line 2")
    assert row.label == "heart sounds, heartbeat" and row.split == "test"
    # Class names still come from every row, so indices do not shift with take-downs.
    assert len(recs.class_names) == 3


def test_all_files_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no clips remain.*5 missing.*first missing"):
        read_dataset("vggsound", _set(tmp_path, present=()))


def test_two_column_form(tmp_path: Path) -> None:
    (tmp_path / "test.csv").write_bytes(
        b'glLQrEijrKg_000300.mp4,playing hammond organ\n---g-f_I2yQ_000001.mp4,"heart sounds, heartbeat"\n'
    )
    for name in ("glLQrEijrKg_000300.mp4", "---g-f_I2yQ_000001.mp4"):
        (tmp_path / name).touch()
    recs = read_dataset("vggsound", tmp_path, annotations="test.csv", split="test")
    assert recs.class_names == ["heart sounds, heartbeat", "playing hammond organ"]
    assert [c.extras["group"] for c in recs.clips] == ["glLQrEijrKg", "---g-f_I2yQ"]
    assert [c.labels for c in recs.clips] == [(1,), (0,)] and {c.split for c in recs.clips} == {"test"}


def test_split_option_only_for_the_two_column_form(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="2-column file,label form only"):
        read_dataset("vggsound", _set(tmp_path), split="test")


def test_two_column_dotdot_path_refused(tmp_path: Path) -> None:
    (tmp_path / "test.csv").write_bytes(b"ok_000001.mp4,a\n../../etc/x_000001.mp4,b\n")
    with pytest.raises(UserError, match=r"test.csv, line 2: media path .* escapes the root"):
        read_dataset("vggsound", tmp_path, annotations="test.csv")


def test_class_list_fixes_index_order_and_reports_unused(tmp_path: Path) -> None:
    _set(tmp_path)
    (tmp_path / "classes.txt").write_bytes(
        b"playing hammond organ\npeople marching\nheart sounds, heartbeat\nbird chirping\n"
    )
    recs = read_dataset("vggsound", tmp_path, class_list="classes.txt")
    assert recs.class_names[:3] == ["playing hammond organ", "people marching", "heart sounds, heartbeat"]
    assert [c.labels[0] for c in recs.clips] == [1, 2, 1, 2, 0]
    assert [(r.status, r.label) for r in recs.report] == [("warning", "bird chirping")]


def test_label_missing_from_class_list_is_an_error(tmp_path: Path) -> None:
    _set(tmp_path)
    (tmp_path / "classes.txt").write_bytes(b"people marching\nheart sounds, heartbeat\n")
    with pytest.raises(UserError, match="vggsound.csv, line 5: label 'playing hammond organ' is not in the class"):
        read_dataset("vggsound", tmp_path, class_list="classes.txt")


@pytest.mark.parametrize("bad, message", [
    ("abc,1.5,x,train\n", "line 1: start_seconds='1.5' is not an integer"),
    ("abc,1,x,holdout\n", "line 1: unknown split 'holdout'"),
    ("abc,1,x,train\nabc,2,x\n", "line 2: 3 fields, the first row has 4"),
    ("abc,1,x\n", "line 1: 3 fields; expected"),
])
def test_malformed_rows_name_the_line(tmp_path: Path, bad: str, message: str) -> None:
    (tmp_path / "vggsound.csv").write_bytes(bad.encode())
    with pytest.raises(UserError, match=message):
        read_dataset("vggsound", tmp_path, check_files=False)
