"""``fusionbench`` command line: data, train, sweep, leaderboard, list.

Every run is configured by ``experiments/defaults.yaml`` ← ``--experiment FILE`` ← ``key=value`` overrides, validated
before anything runs (a typo fails at once, naming the valid keys).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusionbench.config import ConfigError, load_config, project_path


def _cmd_data(args: argparse.Namespace) -> int:
    from fusionbench.data.synthetic import generate

    options = {k: v for k, v in dict(video_noise=args.video_noise, audio_snr_db=args.audio_snr_db, drop_p=args.drop_p).items() if v is not None}
    csv = generate(args.task, args.n, args.seed, Path(args.out), workers=args.workers, **options)
    print(f"wrote {csv}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    cfg = load_config(args.overrides, args.experiment)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    from fusionbench.train import run

    run_id = run(cfg)
    print(f"MLflow run {run_id} in {project_path(cfg.tracking.store)}")
    return 0


def grid_from_experiment(experiment: str | None, overrides: list[str]) -> list[list[str]]:
    """The experiment file's ``sweep:`` as override grids (``key=a,b,c``), one per block; command-line keys win.

    ``sweep:`` is one mapping (one grid) or a list of mappings (the union of their grids, e.g. a longer schedule for
    one task). Without an experiment file the command line is the one grid.
    """
    if not experiment:
        return [list(overrides)]
    from omegaconf import OmegaConf

    path = Path(experiment) if Path(experiment).exists() else project_path("experiments") / experiment
    sweep = OmegaConf.to_container(OmegaConf.load(path)).get("sweep") or {}
    blocks = sweep if isinstance(sweep, list) else [sweep]
    given = {o.split("=", 1)[0] for o in overrides}
    grids = []
    for block in blocks:
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: each sweep block must be a mapping of key: [values], got {block!r}")
        from_file = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in block.items() if k not in given]
        grids.append(from_file + list(overrides))
    return grids


def _cmd_sweep(args: argparse.Namespace) -> int:
    from fusionbench.sweep import run_sweep

    grids = grid_from_experiment(args.experiment, args.overrides)
    report = run_sweep(grids, experiment=args.experiment, workers=args.workers)
    print(report)
    if args.leaderboard:
        _write_leaderboard(args.experiment, args.overrides)
    return 1 if report.failed else 0


def _write_leaderboard(experiment: str | None, overrides: list[str]) -> None:
    from fusionbench.leaderboard import write_leaderboard

    cfg = load_config([o for o in overrides if o.startswith("tracking.")], experiment)
    paths = write_leaderboard(project_path(cfg.tracking.store), cfg.tracking.experiment, project_path("results"))
    for path in paths.values() if isinstance(paths, dict) else paths:
        print(f"wrote {path}")


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    _write_leaderboard(args.experiment, args.overrides)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from fusionbench.evaluate.efficiency import count_params, forward_flops
    from fusionbench.registry import PRESETS, create_model, list_fusions

    print(f"{'fusion':<14}" + "".join(f"{p + ' params':>16}" for p in PRESETS) + f"{'small GFLOPs':>14}")
    for name in list_fusions():
        counts = [count_params(create_model(name, 10, p)) for p in PRESETS]
        small = create_model(name, 10, "small")
        gflops = forward_flops(small, PRESETS["small"].audio_shape, PRESETS["small"].video_shape) / 1e9
        print(f"{name:<14}" + "".join(f"{c:>16,}" for c in counts) + f"{gflops:>14.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusionbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate or inspect data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="write the embedded synthetic audio-visual data set as mp4 + clips.csv")
    synth.add_argument("--task", required=True, choices=["joint", "modsum", "sync"])
    synth.add_argument("--n", type=int, default=3000, help="number of clips")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="output folder (clips/ and clips.csv)")
    synth.add_argument("--video-noise", type=float, default=None, help="pixel noise sigma (default: the task's)")
    synth.add_argument("--audio-snr-db", type=float, default=None, help="audio SNR in dB (default: the task's)")
    synth.add_argument("--drop-p", type=float, default=None, help="probability one modality is pure noise")
    synth.add_argument("--workers", type=int, default=2)
    synth.set_defaults(func=_cmd_data)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--experiment", "-e", default=None, help="experiment YAML merged over experiments/defaults.yaml")
        p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. fusion=mbt data.task=modsum")

    train = sub.add_parser("train", help="train and evaluate one configuration (one MLflow run)")
    with_config(train)
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.set_defaults(func=_cmd_train)

    sweep = sub.add_parser("sweep", help="run a grid: key=a,b,c lists and a:b ranges over any key")
    with_config(sweep)
    sweep.add_argument("--workers", type=int, default=1, help="local worker processes")
    sweep.add_argument("--leaderboard", action="store_true", help="write the leaderboard when the sweep ends")
    sweep.set_defaults(func=_cmd_sweep)

    board = sub.add_parser("leaderboard", help="results/runs.csv, leaderboard.csv, leaderboard.md and plots from MLflow")
    with_config(board)
    board.set_defaults(func=_cmd_leaderboard)

    lister = sub.add_parser("list", help="registered fusions with parameter counts per preset")
    lister.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fusionbench: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
