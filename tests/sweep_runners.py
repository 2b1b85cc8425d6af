"""A real, cheap sweep runner for tests: a tracked MLflow run with metrics computed from the config, no training.

Behaviour is chosen by the config value ``data.manifest`` (free text for the synthetic dataset, part of the config
hash, so each behaviour is its own cell): ``;``-separated directives

- ``sleep=<s>``: take that long;
- ``rendezvous=<n>``: wait until ``n`` processes have been inside a run (a file per pid in the store's state folder);
- ``raise`` / ``raise_once``: raise inside the run (``_once``: only until a marker file exists in the store's state
  folder);
- ``exit`` / ``exit_once``: ``os._exit(3)`` inside the run (a hard crash: no cleanup, no status written);
- ``sigkill``: SIGKILL itself inside the run.
"""
from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

from omegaconf import DictConfig

from fusionbench import tracking

FUSION_OFFSET = {"late": 0.0, "early": 0.05, "mid": 0.04, "mbt": 0.03, "zorro": 0.02, "deepavfusion": 0.01}


def expected_top1(cfg: DictConfig, condition: str = "av") -> float:
    """Deterministic accuracy: a function of fusion, seed and condition."""
    drop = {"av": 0.0, "audio_only": 0.2, "video_only": 0.3}.get(condition, 0.1)
    return round(0.6 + FUSION_OFFSET.get(cfg.fusion, 0.0) + 0.01 * int(cfg.seed) - drop, 6)


def _directives(cfg: DictConfig) -> dict[str, str]:
    text = str(cfg.data.manifest or "")
    return dict((part.split("=", 1) + [""])[:2] for part in text.split(";") if part)


def _first_time(cfg: DictConfig, what: str) -> bool:
    """True the first time this cell does ``what`` (a marker file in the store's state folder remembers it)."""
    key = tracking.identity_of(cfg).key
    folder = tracking.store_dir(cfg.tracking.store, cfg.tracking.state_dir)
    marker = folder / f"{what}.{hashlib.sha1(key.encode()).hexdigest()[:10]}.marker"
    if marker.exists():
        return False
    marker.touch()
    return True


def run(cfg: DictConfig) -> str:
    todo = _directives(cfg)
    with tracking.tracked_run(cfg) as tr:
        offset = FUSION_OFFSET.get(cfg.fusion, 0.0)
        tr.log_metrics({"model/params": 1000.0 + len(cfg.fusion), "model/gflops": 1.0 + offset})
        if "rendezvous" in todo:  # wait until that many processes are inside a run at once (proves concurrency)
            folder = tracking.store_dir(cfg.tracking.store, cfg.tracking.state_dir) / "rendezvous"
            folder.mkdir(exist_ok=True)
            (folder / str(os.getpid())).touch()
            deadline = time.monotonic() + 120
            while len(list(folder.iterdir())) < int(todo["rendezvous"]):
                if time.monotonic() > deadline:
                    raise TimeoutError("rendezvous: the other workers never came")
                time.sleep(0.05)
        if "sleep" in todo:
            time.sleep(float(todo["sleep"]))
        if "raise" in todo or ("raise_once" in todo and _first_time(cfg, "raise")):
            raise RuntimeError(f"planned failure in seed {cfg.seed}")
        if "exit" in todo or ("exit_once" in todo and _first_time(cfg, "exit")):
            os._exit(3)
        if "sigkill" in todo:
            os.kill(os.getpid(), signal.SIGKILL)
        metrics = {f"test/{c}/top1": expected_top1(cfg, c) for c in cfg.eval.conditions}
        metrics.update({f"test/{c}/loss": 1 - expected_top1(cfg, c) for c in cfg.eval.conditions})
        metrics["time/train_s"] = 0.01
        tr.log_metrics(metrics)
        return tr.run_id


_TEMPLATE: list[Path] = []


def fresh_store(directory: Path) -> Path:
    """An empty, already-migrated sqlite store at ``directory/mlflow.db``: a copy of one migrated per test session
    (a new store's migrations cost seconds; copying costs milliseconds)."""
    import atexit
    import shutil
    import tempfile

    if not _TEMPLATE:
        folder = tempfile.mkdtemp(prefix="fb-store-template-")
        atexit.register(shutil.rmtree, folder, True)
        template = Path(folder) / "mlflow.db"
        tracking.client(template)
        _TEMPLATE.append(template)
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(_TEMPLATE[0], directory / "mlflow.db"))
