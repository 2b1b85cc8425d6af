"""Config: typos fail before any run with the valid keys named; the hash ignores what does not change a run."""
import subprocess
import sys

import pytest

from fusionbench.config import ConfigError, config_hash, load_config


def test_defaults_load_and_validate():
    cfg = load_config()
    assert cfg.fusion == "late" and cfg.data.task == "joint"


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.taks=modsum", ["'data.taks'", "did you mean data.'task'", "dataset", "task", "root"]),
        ("trian.lr=0.1", ["'trian'", "train", "data", "model"]),
        ("train.lr_max=0.1", ["'train.lr_max'", "max_epochs", "weight_decay"]),
        ("data.audio.mel_bins=64", ["num_mel_bins", "frame_shift_ms"]),
    ],
)
def test_typo_names_valid_keys(override, named):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    for text in named:
        assert text in str(err.value)


def test_bad_choices_and_fusion_options_fail():
    with pytest.raises(ConfigError, match="valid: .*late"):
        load_config(["fusion=lat"])
    with pytest.raises(ConfigError, match="valid keys: .*dim"):
        load_config(["model.dimm=3"])
    with pytest.raises(ConfigError, match="joint, modsum, sync"):
        load_config(["data.task=jiont"])
    with pytest.raises(ConfigError, match="unknown eval condition"):
        load_config(["eval.conditions=[av,audio_snr]"])
    with pytest.raises(ConfigError, match="invalid config value"):
        load_config(["train.lr=fast"])
    with pytest.raises(ConfigError, match="stop_val_loss=-0.1 must be >= 0"):
        load_config(["train.stop_val_loss=-0.1"])


def test_cli_typo_fails_before_any_run(tmp_path):
    """The CLI exits 2 with the valid keys before touching data or the MLflow store."""
    store = tmp_path / "store.db"
    proc = subprocess.run(
        [sys.executable, "-m", "fusionbench.cli", "train", "data.taks=modsum", f"tracking.store={store}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "valid keys under 'data'" in proc.stderr and "task" in proc.stderr
    assert not store.exists()


def test_config_hash_ignores_seed_and_store_but_not_semantics():
    base = config_hash(load_config())
    assert config_hash(load_config(["seed=3", "tracking.store=/tmp/x.db", "data.num_workers=2"])) == base
    assert config_hash(load_config(["train.lr=0.01"])) != base
    assert config_hash(load_config(["data.task=modsum"])) != base
