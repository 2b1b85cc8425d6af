"""The command line as a user meets it: one-line input errors (exit 2, ``--debug`` for the traceback), a sweep that
fails before any cell runs, a run that survives ``| head``, ``list`` on the meta device, generation progress."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusionbench import cli, tracking
from fusionbench.config import PROJECT_ROOT, ConfigError, load_config


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def test_missing_experiment_file_is_one_line_exit_2(capsys, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli.main(["train", "--experiment", str(missing)]) == 2
    assert _one_error_line(capsys) == f"fusionbench: error: {missing}: experiment file not found"


def test_bad_value_names_the_file_that_set_it(capsys, tmp_path: Path) -> None:
    yaml = tmp_path / "exp.yaml"
    yaml.write_text("train:\n  warmup_frac: 1.5\n")
    assert cli.main(["train", "-e", str(yaml), "--print-config"]) == 2
    assert _one_error_line(capsys) == f"fusionbench: error: {yaml}: train.warmup_frac=1.5 must be in [0, 1)"
    assert cli.main(["train", "-e", str(yaml), "train.warmup_frac=-0.1", "--print-config"]) == 2
    assert _one_error_line(capsys) == "fusionbench: error: command line: train.warmup_frac=-0.1 must be in [0, 1)"


@pytest.mark.parametrize("argv", [["--debug", "train", "data.batch_size=0"], ["train", "data.batch_size=0", "--debug"]])
def test_debug_shows_the_traceback(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match="data.batch_size=0 must be > 0"):
        cli.main(argv)


def test_sweep_fails_before_any_cell_runs(capsys, tmp_path: Path) -> None:
    """Today's bug: ``data.batch_size=16,0,32`` ran cell 1, then failed in cell 2. Now nothing runs at all."""
    store = tmp_path / "store" / "mlflow.db"
    assert cli.main(["sweep", "fusion=late", "data.batch_size=16,0,32", f"tracking.store={store}"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("fusionbench: error: command line: sweep cell 2/3 ")
    assert line.endswith("data.batch_size=0 must be > 0")
    assert not store.exists() and not store.parent.exists()  # no store, no data, no run


# ------------------------------------------------------------------------------ data errors inside a training run


def _clips_manifest(source: Path, out: Path, missing: bool) -> Path:
    """A generic clips.csv over the tiny synthetic set's real mp4 files (absolute paths), one row naming a file that
    does not exist when ``missing``."""
    with source.open() as fh:
        rows = [{"path": str(source.parent / r["path"]), "label": r["label"], "split": r["split"]}
                for r in csv.DictReader(fh)]
    if missing:
        rows.append({"path": str(out.parent / "gone.mp4"), "label": rows[0]["label"], "split": "train"})
    (out.parent / "classes.txt").write_text("".join(f"{i}\n" for i in range(16)))  # 6 test clips lack some classes
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def _clips_overrides(manifest: Path, tmp_path: Path) -> list[str]:
    return ["preset=tiny", "data.dataset=clips", f"data.manifest={manifest}", "data.options.allow_absolute=true",
            f"data.options.class_list={manifest.parent / 'classes.txt'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.batch_size=8", "train.max_epochs=1", "train.progress=false",
            f"tracking.store={tmp_path / 'mlflow.db'}"]


def test_missing_media_file_fails_the_run_with_one_line_and_records_the_reason(capsys, tmp_path: Path,
                                                                                tiny_synth_manifest: Path) -> None:
    manifest = _clips_manifest(tiny_synth_manifest, tmp_path / "clips.csv", missing=True)
    overrides = _clips_overrides(manifest, tmp_path)
    assert cli.main(["train", *overrides]) == 2
    gone = tmp_path / "gone.mp4"
    assert _one_error_line(capsys) == f"fusionbench: error: {gone}: file not found"
    cfg = load_config(overrides)
    frame = tracking.runs_frame(cfg.tracking.store, cfg.tracking.experiment)
    assert list(frame["status"]) == ["FAILED"]
    assert f"{gone}: file not found" in frame["tags.fb.error"].iloc[0]


def test_malformed_manifest_is_one_line_naming_the_manifest(capsys, tmp_path: Path) -> None:
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,label\na.mp4,1,extra\n")
    assert cli.main(["train", *_clips_overrides(manifest, tmp_path)]) == 2
    assert _one_error_line(capsys) == f"fusionbench: error: {manifest}: line 2: 3 fields, header has 2"


# ---------------------------------------------------------------------------------------------- train | head -1


def test_pipe_safe_stdout_survives_a_closed_reader() -> None:
    """A real pipe whose reader has gone: writes and flushes go on (to /dev/null) instead of raising."""
    read_fd, write_fd = os.pipe()
    inner = open(write_fd, "w", buffering=1)
    stream = cli.PipeSafeStdout(inner)
    print("first", file=stream, flush=True)
    assert os.read(read_fd, 100) == b"first\n"
    os.close(read_fd)  # the reader exits, as head does after one line
    for i in range(3):
        print(f"line {i}", file=stream, flush=True)  # EPIPE → /dev/null, no BrokenPipeError
    stream.flush()
    assert os.path.samefile(f"/proc/self/fd/{stream.fileno()}", os.devnull)
    inner.close()


@pytest.mark.slow
def test_train_piped_into_head_finishes_its_run(tmp_path: Path, tiny_synth_root: Path) -> None:
    """stdout closing after one line (``| head -1``) must neither fail the command nor mark the run FAILED
    (a real subprocess, ~15-25 s on 2 cores: slow)."""
    store = tmp_path / "mlflow.db"
    overrides = ["preset=tiny", f"data.root={tiny_synth_root}", "data.synth.num_clips=40", "data.batch_size=8",
                 f"data.cache_dir={tmp_path / 'cache'}", "train.max_epochs=1", f"tracking.store={store}"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    train = subprocess.Popen([sys.executable, "-m", "fusionbench.cli", "train", *overrides], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=train.stdout, stdout=subprocess.PIPE)
    train.stdout.close()  # head alone reads the pipe now: once it exits, every later write gets EPIPE
    first, _ = head.communicate(timeout=300)
    err = train.stderr.read().decode()
    assert train.wait(timeout=300) == 0, err
    assert first.strip() and "Traceback" not in err and "BrokenPipe" not in err, err
    cfg = load_config(overrides)
    frame = tracking.runs_frame(cfg.tracking.store, cfg.tracking.experiment)
    assert list(frame["status"]) == ["FINISHED"], frame.get("tags.fb.error")


# --------------------------------------------------------------------------------------------------------- list


def test_list_counts_on_the_meta_device_match_real_models(capsys) -> None:
    from fusionbench.evaluate.efficiency import count_params, forward_flops
    from fusionbench.registry import PRESETS, create_model

    assert cli.main(["list"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    late = create_model("late", 10, "tiny")
    assert rows["late"][0] == f"{count_params(late):,}"
    small = create_model("mbt", 10, "small")
    gflops = forward_flops(small, PRESETS["small"].audio_shape, PRESETS["small"].video_shape) / 1e9
    assert rows["mbt"][1] == f"{count_params(small):,}" and rows["mbt"][-1] == f"{gflops:.4f}"


# ------------------------------------------------------------------------------------------ generation progress


def test_synthetic_generation_shows_progress(capsys, tmp_path: Path) -> None:
    assert cli.main(["data", "synth", "--task", "joint", "--n", "12", "--out", str(tmp_path), "--workers", "1"]) == 0
    err = capsys.readouterr().err.splitlines()
    steps = [line for line in err if "/12 clips (" in line and "clips/s" in line]
    assert len(steps) >= 2, err  # intermediate lines while writing, not only at the end
    assert any("wrote 12 clips in" in line and "clips/s" in line for line in err), err


def test_a_diverged_run_ends_in_one_line_exit_1(capsys, tiny_synth_manifest: Path, tmp_path: Path) -> None:
    """A run whose loss became NaN/inf is not a bug: one line naming the divergence, exit 1, no traceback."""
    manifest = _clips_manifest(tiny_synth_manifest, tmp_path / "clips.csv", missing=False)
    argv = ["train", *_clips_overrides(manifest, tmp_path), "train.lr=1e30", "train.grad_clip=0",
            "train.warmup_frac=0", "eval.conditions=[av]"]
    assert cli.main(argv) == 1
    line = _one_error_line(capsys)
    assert line.startswith("fusionbench: diverged: train loss ") and "marked diverged" in line
