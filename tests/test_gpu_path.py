"""The GPU path, checked where it can be on CPU: ``train.precision=bf16-mixed`` reaches the fusion's forward as
autocast, ``train.compile`` compiles it (off by default, not part of the run identity), and ``cost/peak_mem_mb`` is
CUDA's max allocated memory on a GPU. The CUDA cases are skipped without a GPU (unverified on this machine)."""
from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from fusionbench import cli, tracking, train
from fusionbench.config import load_config
from fusionbench.evaluate.profile import PeakMemory

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path is unverified here")


def _base(root: Path, accelerator: str = "cpu") -> list[str]:
    return ["preset=tiny", "fusion=late", f"data.root={root / 'synth'}", f"data.cache_dir={root / 'cache'}",
            "data.synth.num_clips=40", "data.batch_size=8", "train.max_epochs=1", "train.progress=false",
            "train.threads=1", f"train.accelerator={accelerator}", "train.checkpoint_every=0",
            f"tracking.store={root / 'mlflow.db'}"]


def _autocast_seen(root: Path, precision: str, device: str) -> set[tuple[bool, torch.dtype]]:
    """(autocast on, its dtype) as the fusion's forward saw them in a real two-step fit."""
    cfg = load_config([*_base(root, "cpu" if device == "cpu" else "gpu"), f"train.precision={precision}",
                       "train.max_steps=2"])
    datamodule, task = train.build(cfg)
    seen = set()
    task.model.register_forward_hook(
        lambda *_: seen.add((torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))))
    train._trainer(cfg, []).fit(task, datamodule=datamodule)
    return seen


def test_bf16_mixed_runs_the_forward_under_bf16_autocast_on_cpu(tmp_path) -> None:
    assert _autocast_seen(tmp_path, "bf16-mixed", "cpu") == {(True, torch.bfloat16)}
    assert {on for on, _ in _autocast_seen(tmp_path, "32-true", "cpu")} == {False}


@CUDA
def test_bf16_mixed_runs_the_forward_under_bf16_autocast_on_cuda(tmp_path) -> None:
    assert _autocast_seen(tmp_path, "bf16-mixed", "cuda") == {(True, torch.bfloat16)}


@CUDA
def test_peak_memory_is_cuda_max_allocated() -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    peak = PeakMemory(device)
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device=device)  # 64 MiB
    del block
    assert peak.read() >= 64


def test_compile_is_off_by_default_and_not_part_of_the_identity(tmp_path) -> None:
    assert load_config(_base(tmp_path)).train.compile is False
    plain, compiled = (tracking.identity_of(load_config([*_base(tmp_path), f"train.compile={c}"])) for c in ("false", "true"))
    assert plain == compiled


@pytest.mark.slow  # inductor compiles the tiny model's train and eval graphs: minutes on a loaded 2-core machine
def test_compile_compiles_the_fusion_and_computes_the_same_run(tmp_path) -> None:
    from torch._dynamo.utils import counters

    runs = {}
    for flag in ("false", "true"):
        overrides = [*_base(tmp_path), f"train.compile={flag}", f"tracking.experiment=compile_{flag}"]
        counters.clear()
        with redirect_stdout(io.StringIO()):
            assert cli.main(["train", *overrides]) == 0
        runs[flag] = tracking.runs_frame(tmp_path / "mlflow.db", f"compile_{flag}").iloc[-1]
        graphs = counters["stats"]["unique_graphs"]
        assert (graphs > 0) == (flag == "true"), graphs
    for key in ("metrics.train/loss", "metrics.val/loss", "metrics.test/av/loss"):
        assert runs["true"][key] == pytest.approx(runs["false"][key], abs=1e-4), key
