import pytest

from fusionbench.tasks.classify import warmup_cosine


def test_warmup_then_cosine_to_zero():
    total, warmup = 100, 10
    values = [warmup_cosine(s, total, warmup) for s in range(total + 1)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # monotone decay after warm-up
    assert values[55] == pytest.approx(0.5, abs=1e-9) and values[100] == pytest.approx(0.0, abs=1e-12)


def test_constant_holds_the_peak_after_the_warm_up():
    total, warmup = 100, 10
    values = [warmup_cosine(s, total, warmup, decay=False) for s in range(total + 1)]
    assert values[:10] == [warmup_cosine(s, total, warmup) for s in range(10)]  # the same warm-up
    assert values[10:] == [1.0] * 91


@pytest.mark.parametrize("schedule, last", [("cosine", warmup_cosine(19, 20, 2)), ("constant", 1.0)])
def test_the_optimiser_follows_train_lr_schedule(schedule: str, last: float):
    """The supervised and pretraining optimiser (adamw_warmup_cosine) reads train.lr_schedule; lr at the last step."""
    from torch import nn

    from fusionbench.config import load_config
    from fusionbench.tasks.classify import adamw_warmup_cosine

    cfg = load_config(overrides=[f"train.lr_schedule={schedule}", "train.warmup_frac=0.1"])
    model = nn.Linear(2, 2)
    built = adamw_warmup_cosine(model, cfg.train, lr=1e-3, total=20)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[1] == pytest.approx(1e-3) and lrs[19] == pytest.approx(1e-3 * last)


def test_lr_schedule_config_checks_and_identity():
    from omegaconf import OmegaConf

    from fusionbench.config import ConfigError, config_hash, load_config

    with pytest.raises(ConfigError, match="train.lr_schedule='linear' is not one of cosine, constant"):
        load_config(overrides=["train.lr_schedule=linear"])
    before = OmegaConf.to_container(load_config())  # a config from before the key existed: its runs keep their id
    del before["train"]["lr_schedule"]
    default = config_hash(OmegaConf.create(before))
    assert config_hash(load_config(overrides=["train.lr_schedule=cosine"])) == default
    assert config_hash(load_config(overrides=["train.lr_schedule=constant"])) != default
