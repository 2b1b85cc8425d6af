"""The synthetic generator: determinism (bytes), label rules, leak-free sync construction, splits, audio content."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from fusionbench.data import synthetic as S


def _digest(out: Path) -> dict[str, str]:
    files = sorted([out / "clips.csv", *(out / "clips").glob("*.mp4")])
    return {f.relative_to(out).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_same_seed_gives_identical_bytes_with_any_worker_count(tmp_path: Path) -> None:
    a = S.generate("sync", 10, seed=3, out=tmp_path / "a", workers=1)
    b = S.generate("sync", 10, seed=3, out=tmp_path / "b", workers=2)
    assert _digest(a.parent) == _digest(b.parent)
    assert len(_digest(a.parent)) == 11  # the CSV and 10 mp4s
    c = S.generate("sync", 10, seed=4, out=tmp_path / "c", workers=1)
    assert a.read_bytes() != c.read_bytes()
    assert _digest(a.parent)["clips/00000.mp4"] != _digest(c.parent)["clips/00000.mp4"]


def test_csv_has_the_latent_factors(tmp_path: Path) -> None:
    rows = _rows(S.generate("joint", 6, seed=0, out=tmp_path, workers=1))
    assert list(rows[0]) == S.CSV_COLUMNS
    assert rows[0]["path"] == "clips/00000.mp4" and (tmp_path / rows[0]["path"]).is_file()
    for row in rows:
        assert row["shape"] in S.SHAPES and row["timbre"] in S.TIMBRES and row["colour"] in S.COLOURS
        assert row["events"] == row["audio_events"]  # joint: bursts on the flashes
        assert 3 <= len(row["events"].split(";")) <= 5


@pytest.mark.parametrize("task", ["joint", "modsum", "sync", "paired"])
def test_labels_follow_the_task_rule(task: str) -> None:
    spec = S.TASKS[task]
    factors = S.make_factors(spec, 300, seed=1, params=S.render_params(spec))
    for f in factors:
        rule = {"joint": f.shape * 4 + f.pitch, "modsum": (f.shape + f.pitch) % 4, "sync": int(f.aligned),
                "paired": f.shape}[task]
        assert f.label == rule
    assert {f.label for f in factors} == set(range(spec.num_classes))  # every class occurs


def test_paired_shares_the_class_and_nothing_else() -> None:
    """paired: the pitch is the shape's; the nuisances vary independently of the class and there are no events."""
    spec = S.TASKS["paired"]
    factors = S.make_factors(spec, 400, seed=3, params=S.render_params(spec))
    assert all(f.pitch == f.shape == f.label and f.events == () == f.audio_events for f in factors)
    for label in range(4):
        of_class = [f for f in factors if f.label == label]
        assert {f.colour for f in of_class} == set(S.COLOURS) and {f.timbre for f in of_class} == set(S.TIMBRES)
        assert len({f.x0 for f in of_class}) > len(of_class) // 2  # positions still vary (motion on)


def test_the_config_and_cli_know_every_task() -> None:
    from fusionbench.config import SYNTH_TASKS

    assert set(SYNTH_TASKS) == set(S.TASKS)


def test_generated_csv_labels_follow_the_rule(tmp_path: Path) -> None:
    for row in _rows(S.generate("modsum", 8, seed=2, out=tmp_path, workers=1)):
        assert int(row["label"]) == (S.SHAPES.index(row["shape"]) + int(row["pitch"])) % 4
        assert abs(float(row["pitch_hz"]) / S.PITCHES_HZ[int(row["pitch"])] - 1) <= S.PITCH_JITTER + 1e-9


def test_sync_negatives_are_shifted_rhythms_and_positions_cover_every_frame() -> None:
    spec = S.TASKS["sync"]
    T = 16
    factors = S.make_factors(spec, 2000, seed=0, params=S.render_params(spec, num_frames=T))
    audio_pos = {0: np.zeros(T), 1: np.zeros(T)}
    video_pos = {0: np.zeros(T), 1: np.zeros(T)}
    for f in factors:
        if f.aligned:
            assert f.audio_events == f.events and f.shift == 0
        else:
            assert 2 <= f.shift <= T - 2
            assert f.audio_events == tuple(sorted((e + f.shift) % T for e in f.events))
            d = np.abs(np.subtract.outer(f.audio_events, f.events))
            assert np.minimum(d, T - d).min() >= spec.min_shift  # no burst near any flash
        audio_pos[f.label][list(f.audio_events)] += 1
        video_pos[f.label][list(f.events)] += 1
    # first and last frames carry events in both classes, for both modalities (the documented leak's cue)
    for pos in (audio_pos, video_pos):
        for label in (0, 1):
            assert pos[label][0] > 0 and pos[label][T - 1] > 0
            freq = pos[label] / pos[label].sum()
            assert np.abs(freq - 1 / T).max() < 0.025  # uniform over frames in each class


def test_valid_shifts_are_translation_invariant() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        events = sorted(rng.choice(16, size=3, replace=False))
        shift = int(rng.integers(16))
        shifted = sorted((e + shift) % 16 for e in events)
        assert S.valid_shifts(events, 16, 2) == S.valid_shifts(shifted, 16, 2)


def test_splits_are_exact_and_deterministic() -> None:
    a = S.assign_splits(200, seed=5, val_frac=0.15, test_frac=0.2)
    assert a == S.assign_splits(200, seed=5, val_frac=0.15, test_frac=0.2)
    assert (a.count("train"), a.count("val"), a.count("test")) == (130, 30, 40)
    assert a != S.assign_splits(200, seed=6, val_frac=0.15, test_frac=0.2)


def test_render_clip_shapes_and_determinism() -> None:
    spec = S.TASKS["joint"]
    f = S.make_factors(spec, 1, seed=0, params=S.render_params(spec, num_frames=8, size=24, fps=4))[0]
    frames, wave = S.render_clip(f)
    assert frames.shape == (8, 24, 24, 3) and frames.dtype == np.uint8
    assert wave.shape == (32000,) and wave.dtype == np.float32 and np.abs(wave).max() <= 1
    frames2, wave2 = S.render_clip(f)
    assert np.array_equal(frames, frames2) and np.array_equal(wave, wave2)


def test_tone_pitch_and_bursts_are_where_the_factors_say() -> None:
    spec = S.TASKS["joint"]
    params = S.render_params(spec, video_noise=0.0, audio_snr_db=80.0)
    for f in S.make_factors(spec, 6, seed=3, params=params):
        _, wave = S.render_clip(f)
        spectrum = np.abs(np.fft.rfft(wave))
        peak_hz = np.argmax(spectrum) * 16000 / len(wave)
        assert abs(peak_hz - f.pitch_hz) < 2.0  # fundamental is the strongest partial for every timbre
        energy = (wave.reshape(16, -1) ** 2).mean(1)  # per video frame
        assert set(np.argsort(energy)[-len(f.audio_events):]) == set(f.audio_events)


def test_flashes_land_on_event_frames() -> None:
    spec = S.TASKS["sync"]  # whole-frame flash
    params = S.render_params(spec, video_noise=0.0)
    for f in S.make_factors(spec, 6, seed=4, params=params):
        frames, _ = S.render_clip(f)
        level = frames.reshape(16, -1).mean(1)
        assert set(np.argsort(level)[-len(f.events):]) == set(f.events)


def test_drop_replaces_one_modality_with_noise() -> None:
    spec = S.TASKS["joint"]
    params = S.render_params(spec, video_noise=0.0, audio_snr_db=80.0)
    factors = S.make_factors(spec, 200, seed=0, params=params, drop_p=0.5)
    drops = [f.drop for f in factors]
    assert 60 < drops.count("audio") + drops.count("video") < 140 and drops.count("audio") > 20
    for f in factors[:40]:
        frames, wave = S.render_clip(f)
        tonal = np.abs(np.fft.rfft(wave)).max() / np.abs(np.fft.rfft(wave)).mean()
        assert (tonal < 10) == (f.drop == "audio")  # white noise has a flat spectrum
        roughness = np.abs(np.diff(frames.astype(float), axis=2)).mean()  # neighbouring-pixel differences
        assert (roughness > 30) == (f.drop == "video")  # pixel noise vs a clean flat scene


def test_task_defaults_are_data_and_a_spec_can_be_overridden(tmp_path: Path) -> None:
    assert {t: s.num_classes for t, s in S.TASKS.items()} == {"joint": 16, "modsum": 4, "sync": 2, "paired": 4}
    assert S.TASKS["joint"].unimodal_ceiling == 0.25 and S.TASKS["sync"].unimodal_ceiling == 0.5
    assert S.unimodal_ceiling("joint", drop_p=0.4) == pytest.approx(0.8 * 0.25 + 0.2 / 16)
    quiet = dataclasses.replace(S.TASKS["joint"], events=(1, 1))
    rows = _rows(S.generate("joint", 3, seed=0, out=tmp_path, spec=quiet))
    assert all(len(r["events"].split(";")) == 1 for r in rows)


def test_unknown_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown synthetic task 'offset'"):
        S.generate("offset", 2, seed=0, out=tmp_path)


def test_sync_is_one_quiet_scene_whose_only_variable_is_the_timing() -> None:
    """sync renders one still red circle with one sine pitch; the events are drawn as with the nuisances on (the
    draws are made all the same, so the RNG stream, hence every clip's rhythm and label, does not depend on it)."""
    spec = S.TASKS["sync"]
    factors = S.make_factors(spec, 300, seed=2, params=S.render_params(spec))
    noisy = S.make_factors(dataclasses.replace(spec, one_scene=False, timbre=None), 300, seed=2,
                           params=S.render_params(spec))
    assert {(f.shape, f.pitch, f.pitch_hz, f.timbre, f.colour, f.x0, f.x1) for f in factors} == {
        (0, 0, S.PITCHES_HZ[0], "sine", "red", 16.0, 16.0)}
    assert len({f.timbre for f in noisy}) == 3 and len({f.shape for f in noisy}) == 4
    assert [(f.events, f.audio_events, f.label) for f in factors] == [(f.events, f.audio_events, f.label) for f in noisy]
    assert len({f.events for f in factors}) > 100


def test_spec_fields_added_later_are_recorded_only_when_set() -> None:
    """A set generated before ``timbre`` / ``one_scene`` existed is still recognised: its spec record is unchanged."""
    assert not set(S.SPEC_FIELDS_ADDED) & set(S.spec_record(S.TASKS["joint"]))
    assert S.spec_record(S.TASKS["sync"])["one_scene"] is True and S.spec_record(S.TASKS["sync"])["timbre"] == "sine"
