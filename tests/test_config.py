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
        ("data.taks=modsum", ["'data.taks'", "did you mean 'data.task'", "dataset", "task", "root"]),
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


# ------------------------------------------------------------------------- every value, before anything runs


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.batch_size=0"], "data.batch_size"),
        (["train.lr=0"], "train.lr"),
        (["train.lr=-1e-3"], "train.lr"),
        (["train.blr=-1"], "train.blr"),
        (["data.clip_seconds=0"], "data.clip_seconds"),
        (["train.max_epochs=0"], "train.max_epochs"),
        (["train.max_steps=0"], "train.max_steps"),
        (["train.accumulate=0"], "train.accumulate"),
        (["train.devices=0"], "train.devices"),
        (["train.threads=0"], "train.threads"),
        (["data.audio.num_mel_bins=0"], "data.audio.num_mel_bins"),
        (["data.audio.target_length=-4"], "data.audio.target_length"),
        (["data.video.num_frames=0"], "data.video.num_frames"),
        (["data.video.size=0"], "data.video.size"),
        (["train.warmup_frac=1"], "train.warmup_frac"),
        (["train.warmup_frac=-0.1"], "train.warmup_frac"),
        (["train.label_smoothing=1.0"], "train.label_smoothing"),
        (["data.synth.val_frac=1"], "data.synth.val_frac"),
        (["data.synth.test_frac=-0.1"], "data.synth.test_frac"),
        (["data.synth.val_frac=0.5", "data.synth.test_frac=0.5"], "data.synth.test_frac"),
        (["data.synth.drop_p=1.5"], "data.synth.drop_p"),
        (["train.accelerator=gpux"], "train.accelerator"),
        (["train.precision=bf17"], "train.precision"),
        (["fusion=mbt", "model.num_bottlenecks=abc"], "model.num_bottlenecks"),
        (["fusion=mbt", "model.num_bottlenecks=2.5"], "model.num_bottlenecks"),
        (["fusion=mbt", "model.bottleneck_plus_one=3"], "model.bottleneck_plus_one"),
        (["model.audio_patch=[32,10,1]"], "model.audio_patch"),
        (["fusion=zorro", "model.num_fusion_tokens=[4]"], "model.num_fusion_tokens"),
        (["model.head_init=ones"], "model.head_init"),  # options every fusion shares: checked before any run
        (["fusion=zorro", "model.patch_embed=fixed"], "model.patch_embed"),
        (["model.pos_init_std=0"], "model.pos_init_std"),
    ],
)
def test_bad_values_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides)
    assert err.value.key == key and err.value.reason.startswith(f"{key}="), err.value
    assert err.value.where == "command line"


def test_model_option_type_error_names_the_expected_type():
    with pytest.raises(ConfigError, match=r"model\.num_bottlenecks='abc' is not int") as err:
        load_config(["fusion=mbt", "model.num_bottlenecks=abc"])
    assert "fusion 'mbt'" in str(err.value)
    with pytest.raises(ConfigError, match=r"model\.fusion_layer=2\.5 is not int \| None"):
        load_config(["fusion=mid", "model.fusion_layer=2.5"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.max_epochs=0", "train.max_steps=5"],  # steps alone bound the run
        ["train.blr=0"], ["train.blr=1e-4"], ["train.warmup_frac=0"], ["data.synth.drop_p=1"],
        ["train.precision=bf16-mixed"], ["train.precision=32"], ["train.accelerator=cpu"], ["train.accelerator=cuda"],
        ["model.audio_patch=[32,10]"],  # a tuple given as a list
        ["fusion=mbt", "model.num_bottlenecks=2", "model.fusion_layer=null"],
        ["fusion=deepavfusion", "model.fusion_layers=[1,2]", "model.fusion_tokens=[4,2,2]"],
        ["fusion=deepavfusion", "model.fusion_layers=all"],
        ["model.mlp_ratio=2"],  # an int where a float is annotated
        ["model.head_init=zeros", "model.patch_embed=frozen", "model.pos_init_std=1"],
    ],
)
def test_good_values_pass(overrides):
    load_config(overrides)


def test_accelerators_and_precisions_are_lightnings():
    import typing

    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
    from lightning.pytorch.accelerators import AcceleratorRegistry

    from fusionbench.config import ACCELERATORS, PRECISIONS

    lightning = set(typing.get_args(_PRECISION_INPUT_STR)) | set(typing.get_args(_PRECISION_INPUT_STR_ALIAS))
    assert set(PRECISIONS) == lightning
    assert set(ACCELERATORS) == set(AcceleratorRegistry.available_accelerators()) | {"gpu", "auto"}  # gpu, auto: aliases


def test_error_names_the_layer_that_set_the_value(tmp_path):
    yaml = tmp_path / "exp.yaml"
    yaml.write_text("data:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config([], yaml)
    assert err.value.where == str(yaml) and str(err.value) == f"{yaml}: data.batch_size=0 must be > 0"
    load_config(["data.batch_size=4"], yaml)  # the command line wins, and is valid
    with pytest.raises(ConfigError) as err:
        load_config(["data.batch_size=-1"], yaml)
    assert err.value.where == "command line"


def test_missing_experiment_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config([], tmp_path / "nope.yaml")
    assert err.value.where == str(tmp_path / "nope.yaml") and err.value.reason == "experiment file not found"


# ---------------------------------------------------------------------------- no interpolations, no resolvers


SECRET = "s3cr3t-value-from-the-environment"


@pytest.mark.parametrize("value", ["${oc.env:FB_TEST_SECRET}", "prefix-${oc.env:FB_TEST_SECRET}", "${data.task}"])
def test_interpolations_on_the_command_line_are_refused(monkeypatch, value):
    monkeypatch.setenv("FB_TEST_SECRET", SECRET)
    with pytest.raises(ConfigError, match=r"data\.root=.*interpolations and resolvers") as err:
        load_config([f"data.root={value}"])
    assert err.value.key == "data.root" and err.value.where == "command line"
    assert SECRET not in str(err.value)


def test_interpolations_in_an_experiment_file_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FB_TEST_SECRET", SECRET)
    yaml = tmp_path / "exp.yaml"
    yaml.write_text("tracking:\n  experiment: ${oc.env:FB_TEST_SECRET}\neval:\n  conditions: [av, '${oc.env:X}']\n")
    with pytest.raises(ConfigError, match=r"tracking\.experiment=") as err:
        load_config([], yaml)
    assert err.value.where == str(yaml) and SECRET not in str(err.value)
    yaml.write_text("eval:\n  conditions: [av, '${oc.env:FB_TEST_SECRET}']\n")
    with pytest.raises(ConfigError, match=r"eval\.conditions\[1\]="):
        load_config([], yaml)
