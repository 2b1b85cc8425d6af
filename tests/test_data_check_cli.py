"""``fusionbench data check`` as a user runs it: the report CSV and the printed counts, no training and no MLflow
run, and one-line errors (exit 2) for bad config and data."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fusionbench import cli
from test_data_report import CLIPS_CSV, CLIPS_EXPECTED, CLIPS_SUMMARY, VGGSOUND_CSV, VGGSOUND_EXPECTED, write_media
from test_data_report import vggsound_root  # noqa: F401 (the fixture)


@pytest.fixture(scope="module")
def clips_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check_clips")
    write_media(root)
    (root / "clips.csv").write_text(CLIPS_CSV)
    return root


def _read(path: Path) -> list[tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["path", "split", "label", "status", "reason"]
        return [tuple(row) for row in reader]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def test_check_writes_the_report_and_prints_the_counts(clips_root: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store" / "mlflow.db"
    out = tmp_path / "report"
    code = cli.main(["data", "check", "data.dataset=clips", f"data.root={clips_root}", f"tracking.store={store}",
                     "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert _read(out / "data_report.csv") == CLIPS_EXPECTED
    assert CLIPS_SUMMARY in captured.out
    assert captured.out.rstrip().endswith(f"wrote {out / 'data_report.csv'}")
    progress = captured.err.strip().splitlines()[-1]
    assert progress.startswith("[data] probing clips") and "probed 7 clips" in progress and "clips/s" in progress
    assert not store.parent.exists()  # no MLflow store, no run


def test_check_on_vggsound_as_published(vggsound_root: Path, tmp_path: Path, capsys) -> None:
    """``data=vggsound`` (experiments/data/vggsound.yaml): the 4-column CSV; VGGSound has no val split, so val is
    carved from train by source video and the warning is printed."""
    out = tmp_path / "report"
    code = cli.main(["data", "check", "data=vggsound", f"data.root={vggsound_root}", "--out", str(out),
                     "--workers", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    got = _read(out / "data_report.csv")
    assert [(p, label, status, reason) for p, _, label, status, reason in got] == [
        (p, label, status, reason) for p, _, label, status, reason in VGGSOUND_EXPECTED]
    for (_, split, *_), (_, given, *_) in zip(got, VGGSOUND_EXPECTED):
        assert split == given or (given, split) == ("train", "val")
    assert "the dataset has no val split" in captured.out
    assert "data report: 6 clips: 1 ok, 2 skipped, 1 padded, 1 audio_missing, 1 video_missing" in captured.out


def test_reader_options_reach_the_reader(vggsound_root: Path, tmp_path: Path, capsys) -> None:
    """``data.options.untrimmed=true``: the files are taken as whole videos and each clip cut at its start_seconds
    (centred on [start, start + 10)), which these 1–2-s files do not reach: every window starts after the end."""
    out = tmp_path / "report"
    assert cli.main(["data", "check", "data=vggsound", f"data.root={vggsound_root}", "data.options.untrimmed=true",
                     "data.val_frac=0", "--out", str(out)]) == 0
    got = {row[0]: row[3:] for row in _read(out / "data_report.csv")}
    assert got["aaaaaaaaaaa_000000.mp4"] == (
        "skipped", "window 4.00–6.00 s starts after the end of the file (video ends at 2.00 s)")
    assert got["bbbbbbbbbbb_000030.mp4"][1].startswith("window 34.00–36.00 s starts after the end of the file")


def test_workers_must_be_positive(clips_root: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["data", "check", "data.dataset=clips", f"data.root={clips_root}", "--out", str(tmp_path),
                  "--workers", "0"])
    assert exc.value.code == 2
    assert "--workers" in capsys.readouterr().err


@pytest.mark.parametrize("dataset, name, text, line", [
    ("clips", "clips.csv", "path,label\nok.mp4,dog\ncaf\xe9.mp4,cat\n", 3),
    ("vggsound", "vggsound.csv", "aaaaaaaaaaa,0,dog,train\nbbbbbbbbbbb,0,caf\xe9,test\n", 2),
])
def test_a_manifest_that_is_not_utf8_names_the_file_and_line(dataset: str, name: str, text: str, line: int,
                                                              tmp_path: Path, capsys) -> None:
    """Latin-1 bytes (é = 0xe9) in the manifest: one line naming the file and the line, exit 2, nothing written."""
    manifest = tmp_path / name
    manifest.write_bytes(text.encode("latin-1"))
    out = tmp_path / "out"
    assert cli.main(["data", "check", f"data={dataset}", f"data.root={tmp_path}", "--out", str(out)]) == 2
    assert _one_error_line(capsys).startswith(f"fusionbench: error: {manifest}, line {line}: not UTF-8 (byte 0xe9")
    assert not out.exists()


def test_a_missing_manifest_and_a_bad_key_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert cli.main(["data", "check", "data.dataset=clips", f"data.root={tmp_path}", "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys) == f"fusionbench: error: {tmp_path / 'clips.csv'}: manifest not found"
    assert cli.main(["data", "check", "data.clip_seconds=0", "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys) == "fusionbench: error: command line: data.clip_seconds=0.0 must be > 0"
