"""EPIC-KITCHENS-100 reader on CSVs in the published 15-column format (and the UDA form with a leading uid)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusionbench.data.datasets import read_dataset
from fusionbench.errors import UserError

HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
          "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n")
TRAIN_ROWS = [
    "P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,3,['door'],[3]\n",
    "P01_01_1,P01,P01_01,00:00:04.029,00:00:04.37,00:00:06.17,262,370,take pan and courgette,take,0,courgette,76,"
    "\"['courgette', 'pan']\",\"[76, 5]\"\n",
    "P02_03_7,P02,P02_03,00:01:02.500,00:01:02.11,00:01:05.90,3723,3950,open pan,open,3,pan,5,['pan'],[5]\n",
]
VAL_ROWS = [
    "P01_102_3,P01,P01_102,00:10:00.000,00:09:59.50,00:10:01.25,29975,30062,take door,take,0,door,3,['door'],[3]\n",
]
VERB_CLASSES = ('id,key,instances,category\n0,take,"[\'take\', \'collect-from\']",retrieve\n1,put,"[\'put\']",leave\n'
                '2,wash,"[\'wash\']",clean\n3,open,"[\'open\']",access\n')
NOUN_CLASSES = "id,key,instances,category\n" + "".join(
    f"{i},{ {3: 'door', 5: 'pan', 76: 'courgette'}.get(i, f'noun{i}') },\"['x']\",cat\n" for i in range(77))


def _epic(root: Path, videos: tuple[str, ...] = ("P01/P01_01", "P02/P02_03", "P01/P01_102"), uda: bool = False,
          classes: bool = True) -> Path:
    def text(rows: list[str]) -> bytes:
        if uda:
            return ("uid," + HEADER + "".join(f"{i},{r}" for i, r in enumerate(rows))).encode()
        return (HEADER + "".join(rows)).encode()

    root.mkdir(parents=True, exist_ok=True)
    (root / "EPIC_100_train.csv").write_bytes(text(TRAIN_ROWS))
    (root / "EPIC_100_validation.csv").write_bytes(text(VAL_ROWS))
    if classes:
        (root / "EPIC_100_verb_classes.csv").write_bytes(VERB_CLASSES.encode())
        (root / "EPIC_100_noun_classes.csv").write_bytes(NOUN_CLASSES.encode())
    for video in videos:
        participant, video_id = video.split("/")
        (root / participant / "videos").mkdir(parents=True, exist_ok=True)
        (root / participant / "videos" / f"{video_id}.MP4").touch()
    return root


def test_verb_segments_cut_by_timestamp(tmp_path: Path) -> None:
    recs = read_dataset("epic_kitchens", _epic(tmp_path))
    assert recs.class_names == ["take", "put", "wash", "open"] and not recs.multilabel and recs.report == []
    first = recs.clips[0]
    assert first.path == tmp_path / "P01" / "videos" / "P01_01.MP4"
    assert first.start_s == pytest.approx(0.14) and first.end_s == pytest.approx(3.37)  # not frames 8 / 202
    assert first.labels == (3,) and first.split == "train" and first.extras["group"] == "P01_01"
    assert recs.clips[2].start_s == pytest.approx(62.11)
    assert recs.clips[3].split == "val" and recs.clips[3].start_s == pytest.approx(599.5)
    assert recs.clips[1].extras["noun_class"] == 76  # the quoted all_nouns list did not shift the columns
    assert [p.name for p in recs.sources] == ["EPIC_100_train.csv", "EPIC_100_validation.csv",
                                              "EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv"]


def test_noun_and_action_targets(tmp_path: Path) -> None:
    _epic(tmp_path)
    nouns = read_dataset("epic_kitchens", tmp_path, target="noun")
    assert len(nouns.class_names) == 77 and [c.labels[0] for c in nouns.clips] == [3, 76, 5, 3]
    actions = read_dataset("epic_kitchens", tmp_path, target="action")
    # the stated order: the (verb_class, noun_class) pairs present, sorted
    assert actions.class_names == ["take / door", "take / courgette", "open / door", "open / pan"]
    assert [c.labels[0] for c in actions.clips] == [2, 1, 3, 0]


def test_uda_leading_uid_column(tmp_path: Path) -> None:
    plain = read_dataset("epic_kitchens", _epic(tmp_path / "a"))
    uda = read_dataset("epic_kitchens", _epic(tmp_path / "b", uda=True))
    assert [(c.labels, c.start_s, c.end_s, c.extras["video_id"]) for c in uda.clips] == [
        (c.labels, c.start_s, c.end_s, c.extras["video_id"]) for c in plain.clips]


def test_missing_video_reports_each_segment(tmp_path: Path) -> None:
    recs = read_dataset("epic_kitchens", _epic(tmp_path, videos=("P02/P02_03", "P01/P01_102")))
    assert [c.extras["narration_id"] for c in recs.clips] == ["P02_03_7", "P01_102_3"]
    assert recs.counts() == {"missing": 2}
    assert {r.path for r in recs.report} == {str(tmp_path / "P01" / "videos" / "P01_01.MP4")}


def test_without_class_files_names_from_rows_and_gaps_reported(tmp_path: Path) -> None:
    recs = read_dataset("epic_kitchens", _epic(tmp_path, classes=False))
    assert recs.class_names == ["take", "1", "2", "open"]
    verb_gap, noun_gap = recs.report
    assert verb_gap.status == "warning" and "verb class ids [1, 2] occur in no row" in verb_gap.reason
    assert "noun class ids [0, 1, 2, 4, 6" in noun_gap.reason and "…" in noun_gap.reason


def test_test_timestamps_without_labels_left_out(tmp_path: Path) -> None:
    _epic(tmp_path)
    (tmp_path / "EPIC_100_test_timestamps.csv").write_bytes(
        b"narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
        b"stop_frame\nP01_11_0,P01,P01_11,00:00:00.560,00:00:00.00,00:00:01.40,1,85\n")
    recs = read_dataset("epic_kitchens", tmp_path, annotations={
        "train": "EPIC_100_train.csv", "test": "EPIC_100_test_timestamps.csv"})
    assert len(recs.clips) == 3 and "no verb_class column" in recs.report[0].reason


@pytest.mark.parametrize("row, message", [
    ("x,P01,P01_01,00:00:01.0,00:00:03.00,00:00:01.00,1,2,a,open,3,door,3,[],[]\n", "line 2: stop_timestamp"),
    ("x,P01,P01_01,00:00:01.0,3.0,00:00:04.00,1,2,a,open,3,door,3,[],[]\n", "line 2: start_timestamp='3.0'"),
    ("x,P01,P01_01,00:00:01.0,00:00:01.00,00:00:04.00,1,2,a,open,9,door,3,[],[]\n", "line 2: verb_class 9 is not"),
    ("x,P01,P01_01,00:00:01.0,00:00:01.00,00:00:04.00,1,2,a,open,3,door\n", "line 2: 12 fields, header has 15"),
])
def test_malformed_rows_name_the_line(tmp_path: Path, row: str, message: str) -> None:
    _epic(tmp_path)
    (tmp_path / "EPIC_100_train.csv").write_bytes((HEADER + row).encode())
    with pytest.raises(UserError, match=message):
        read_dataset("epic_kitchens", tmp_path, annotations={"train": "EPIC_100_train.csv"})
