"""``fusionbench`` command line: data, train, sweep, leaderboard, list.

Every run is configured by ``experiments/defaults.yaml`` ← ``--experiment FILE`` ← ``key=value`` overrides, validated
before anything runs (a typo fails at once, naming the valid keys).

A mistake in the input (config, manifest, media: ``fusionbench.errors.UserError``) ends with one line on stderr,
``fusionbench: error: <file>: <reason>``, and exit status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path

from fusionbench.config import COMMAND_LINE, SYNTH_TASKS, ConfigError, load_config, project_path
from fusionbench.errors import TrainingDiverged, UserError


def _cmd_data(args: argparse.Namespace) -> int:
    from fusionbench.data.synthetic import generate

    options = {k: v for k, v in dict(video_noise=args.video_noise, audio_snr_db=args.audio_snr_db, drop_p=args.drop_p).items() if v is not None}
    csv = generate(args.task, args.n, args.seed, Path(args.out), workers=args.workers, **options)
    print(f"wrote {csv}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    """Probe every clip of the configured dataset (no decoding, no training, no MLflow run) → ``data_report.csv``."""
    from fusionbench.data.report import check_data, summarise, write_report

    cfg = load_config(args.overrides, args.experiment)
    frame, warnings = check_data(cfg.data, workers=args.workers)
    path = write_report(frame, args.out)
    for warning in warnings:
        print(f"warning: {warning}")
    print(summarise(frame))
    print(f"wrote {path}")
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    """Decode every split (and the corrupted test splits of eval.conditions) into the store; resumable."""
    from fusionbench.data.store import prepare_config

    cfg = load_config(args.overrides, args.experiment)
    for line in prepare_config(cfg, workers=args.workers).lines():
        print(line, flush=True)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_one(args: argparse.Namespace, overrides: list[str], runner: str) -> int:
    """Load the config, print it (``--print-config``) or run it with ``<runner>.run`` (one MLflow run)."""
    import importlib

    from omegaconf import OmegaConf

    cfg = load_config(overrides, args.experiment)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    run_id = importlib.import_module(runner).run(cfg)
    from fusionbench.tracking import is_server

    store = cfg.tracking.store if is_server(cfg.tracking.store) else project_path(cfg.tracking.store)
    if run_id is not None:  # None on a distributed rank >= 1: rank 0 records the run and prints it
        print(f"MLflow run {run_id} in {store}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    return _run_one(args, args.overrides, "fusionbench.train")


def pretrain_overrides(overrides: list[str]) -> list[str]:
    """``objective=mae`` → ``pretrain.objective=mae``: a bare key that names a ``pretrain`` field is that field."""
    from dataclasses import fields

    from fusionbench.config import PretrainConfig

    names = {f.name for f in fields(PretrainConfig)}
    return [f"pretrain.{o}" if o.split("=", 1)[0] in names else o for o in overrides]


def _cmd_pretrain(args: argparse.Namespace) -> int:
    return _run_one(args, pretrain_overrides(args.overrides), "fusionbench.pretrain")


def grid_from_experiment(experiment: str | None, overrides: list[str]) -> list[list[str]]:
    """The experiment file's ``sweep:`` as override grids (``key=a,b,c``), one per block; command-line keys win.

    ``sweep:`` is one mapping (one grid) or a list of mappings (the union of their grids, e.g. a longer schedule for
    one task). Without an experiment file the command line is the one grid.
    """
    if not experiment:
        return [list(overrides)]
    from omegaconf import OmegaConf

    path = Path(experiment) if Path(experiment).exists() else project_path("experiments") / experiment
    if not path.is_file():
        raise ConfigError("experiment file not found", where=experiment)
    sweep = OmegaConf.to_container(OmegaConf.load(path)).get("sweep") or {}
    blocks = sweep if isinstance(sweep, list) else [sweep]
    given = {o.split("=", 1)[0] for o in overrides}
    grids = []
    for block in blocks:
        if not isinstance(block, dict):
            raise ConfigError(f"each sweep block must be a mapping of key: [values], got {block!r}", where=str(path))
        from_file = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in block.items() if k not in given]
        grids.append(from_file + list(overrides))
    return grids


def _cmd_sweep(args: argparse.Namespace) -> int:
    from fusionbench.slurm import parse_options, split_options
    from fusionbench.sweep import dry_run, run_sweep

    overrides, launcher_options = split_options(args.overrides)  # launcher.<key>=value: not part of any cell
    grids = grid_from_experiment(args.experiment, overrides)
    if args.dry_run:
        parse_options(launcher_options, args.launcher)
        dry_run(grids, args.experiment)
        return 0
    report = run_sweep(grids, experiment=args.experiment, workers=args.workers, launcher=args.launcher,
                       launcher_options=launcher_options)  # logs its own summary
    if args.leaderboard:
        _write_leaderboard(args.experiment, overrides, out=args.out)
    return 1 if report.failed else 0


def _write_leaderboard(experiment: str | None, overrides: list[str], pareto_x: str = "gflops",
                       out: str = "results") -> None:
    from fusionbench.leaderboard import write_leaderboard

    cfg = load_config([o for o in overrides if o.startswith("tracking.")], experiment)
    paths = write_leaderboard(cfg.tracking.store, cfg.tracking.experiment, project_path(out), pareto_x=pareto_x)
    for path in paths.values() if isinstance(paths, dict) else paths:
        print(f"wrote {path}")


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    _write_leaderboard(args.experiment, args.overrides, args.pareto_x, args.out)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    """Parameters per preset and forward FLOPs at the small preset, all on the meta device: shapes only, no weights
    allocated or initialised (the base preset's 270 M parameters took most of the old 15 s)."""
    import torch

    from fusionbench.evaluate.efficiency import count_params, forward_flops
    from fusionbench.registry import PRESETS, create_model, list_fusions

    print(f"{'fusion':<14}" + "".join(f"{p + ' params':>16}" for p in PRESETS) + f"{'small GFLOPs':>14}", flush=True)
    for name in list_fusions():
        with torch.device("meta"):
            counts = [count_params(create_model(name, 10, p)) for p in PRESETS]
            small = create_model(name, 10, "small")
            gflops = forward_flops(small, PRESETS["small"].audio_shape, PRESETS["small"].video_shape) / 1e9
        print(f"{name:<14}" + "".join(f"{c:>16,}" for c in counts) + f"{gflops:>14.4f}", flush=True)
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from fusionbench.evaluate.profile import run_profiles

    run_profiles(args.overrides, args.experiment, batch=args.batch, warmup=args.warmup, steps=args.steps,
                 out=args.out or None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusionbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error (config, data)")
    # each subcommand also takes --debug after its name; SUPPRESS keeps it from overriding a --debug given before
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_subparser_class(common))

    data = sub.add_parser("data", help="generate or inspect data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="write the embedded synthetic audio-visual data set as mp4 + clips.csv")
    synth.add_argument("--task", required=True, choices=SYNTH_TASKS)
    synth.add_argument("--n", type=int, default=3000, help="number of clips")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="output folder (clips/ and clips.csv)")
    synth.add_argument("--video-noise", type=float, default=None, help="pixel noise sigma (default: the task's)")
    synth.add_argument("--audio-snr-db", type=float, default=None, help="audio SNR in dB (default: the task's)")
    synth.add_argument("--drop-p", type=float, default=None, help="probability one modality is pure noise")
    synth.add_argument("--workers", type=int, default=2)
    synth.set_defaults(func=_cmd_data)
    check = data_sub.add_parser("check", help="probe every clip (headers only, no decoding) and write "
                                "DIR/data_report.csv (path, split, label, status, reason); trains nothing")
    check.add_argument("--experiment", "-e", default=None, help="experiment YAML merged over experiments/defaults.yaml")
    check.add_argument("overrides", nargs="*", help="data=<name> (experiments/data/<name>.yaml) and key=value "
                       "overrides, e.g. data=vggsound data.root=/path/to/VGGSound")
    check.add_argument("--out", required=True, help="output folder (data_report.csv)")
    check.add_argument("--workers", type=_positive_int, default=2, help="probing processes (default 2)")
    check.set_defaults(func=_cmd_data_check)
    prepare = data_sub.add_parser("prepare", help="decode every split into the cache (uint8 frames, float16 fbank, "
                                  "memory-mapped), in parallel; resumable after a kill; training then reads it")
    prepare.add_argument("--experiment", "-e", default=None, help="experiment YAML merged over experiments/defaults.yaml")
    prepare.add_argument("overrides", nargs="*", help="data=<name> (experiments/data/<name>.yaml) and key=value "
                         "overrides, e.g. data=vggsound data.root=/path/to/VGGSound")
    prepare.add_argument("--workers", type=_positive_int, default=None, help="decoding processes (default: all cores)")
    prepare.set_defaults(func=_cmd_data_prepare)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--experiment", "-e", default=None, help="experiment YAML merged over experiments/defaults.yaml")
        p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. fusion=mbt data.task=modsum")

    train = sub.add_parser("train", help="train and evaluate one configuration (one MLflow run)")
    with_config(train)
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.set_defaults(func=_cmd_train)

    pretrain = sub.add_parser("pretrain", help="pretrain one configuration without labels (objective=contrastive|mae); "
                              "saves the encoder checkpoint with its MLflow run")
    with_config(pretrain)
    pretrain.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    pretrain.set_defaults(func=_cmd_pretrain)

    sweep = sub.add_parser("sweep", help="run a grid: key=a,b,c lists and a:b ranges over any key")
    with_config(sweep)
    sweep.add_argument("--workers", type=int, default=1, help="local worker processes (--launcher workers)")
    sweep.add_argument("--launcher", choices=["workers", "local", "slurm"], default="workers",
                       help="workers: local worker processes; slurm: one SLURM job per cell through submitit "
                       "(local: submitit's local executor), options launcher.<key>=value among the overrides: "
                       "partition, timeout_min, gpus_per_node, array_parallelism, ... (fusionbench.slurm)")
    sweep.add_argument("--leaderboard", action="store_true", help="write the leaderboard when the sweep ends")
    sweep.add_argument("--out", default="results", help="the leaderboard's folder (default results)")
    sweep.add_argument("--dry-run", action="store_true",
                       help="validate every cell, list them and which already finished in the store; run nothing")
    sweep.set_defaults(func=_cmd_sweep)

    board = sub.add_parser("leaderboard", help="results/runs.csv, leaderboard.csv, leaderboard.md and plots from MLflow")
    with_config(board)
    from fusionbench.reports.columns import PARETO_X

    board.add_argument("--pareto-x", choices=list(PARETO_X), default="gflops",
                       help="the Pareto plot's cost axis (default gflops)")
    board.add_argument("--out", default="results", help="folder for the set (default results)")
    board.set_defaults(func=_cmd_leaderboard)

    profile = sub.add_parser("profile", help="per fusion: parameters, FLOPs (forward, forward+backward, dense), "
                             "train/inference clips/s, peak memory, FLOP utilisation → results/profile.csv")
    with_config(profile)
    profile.add_argument("--batch", type=_positive_int, default=8, help="clips per step (default 8)")
    profile.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    profile.add_argument("--steps", type=_positive_int, default=10, help="timed steps; the median is reported")
    profile.add_argument("--out", default="results/profile.csv", help="CSV to write ('' = none)")
    profile.set_defaults(func=_cmd_profile)

    lister = sub.add_parser("list", help="registered fusions with parameter counts per preset")
    lister.set_defaults(func=_cmd_list)
    return parser


def _subparser_class(common: argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    """Subparsers (nested ones too) that inherit ``common``'s options."""

    class Sub(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.setdefault("parents", [common])
            super().__init__(*args, **kwargs)

    return Sub


class PipeSafeStdout(io.TextIOBase):
    """stdout that survives its reader going away (``fusionbench train ... | head``): on ``BrokenPipeError`` the file
    descriptor is pointed at /dev/null (the recipe of Python's signal docs) and the command goes on, its run intact."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self._stream = stream

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def error_line(exc: UserError) -> str:
    """``fusionbench: error: <file>: <reason>`` on one line (a config error without a file came from the command
    line)."""
    where = exc.where or (COMMAND_LINE if isinstance(exc, ConfigError) else None)
    reason = " ".join(str(exc.reason).split())
    return f"fusionbench: error: {where}: {reason}" if where else f"fusionbench: error: {reason}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # a new store's migration chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    original = sys.stdout
    try:
        original.fileno()
        sys.stdout = PipeSafeStdout(original)
    except (AttributeError, OSError, io.UnsupportedOperation):  # a captured stream without a descriptor: leave it
        pass
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(error_line(exc), file=sys.stderr, flush=True)
        return 2
    except TrainingDiverged as exc:  # recorded in MLflow as diverged; not a bug: no traceback unless --debug
        if args.debug:
            raise
        print(f"fusionbench: {exc} (the MLflow run is marked diverged; try a lower train.lr)", file=sys.stderr,
              flush=True)
        return 1
    finally:
        sys.stdout.flush()  # what is still buffered goes now, through the guard, not at exit past it
        sys.stdout = original


if __name__ == "__main__":
    sys.exit(main())
