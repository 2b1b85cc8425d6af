"""``train.protocol=linear_probe``: a real Lightning fit on the tiny synthetic set leaves the encoder without
gradients, in eval mode and bit-identical; only the BatchNorm(affine=False) + linear probe heads learn."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from fusionbench.config import ConfigError, load_config
from fusionbench.registry import create_model
from fusionbench.tasks.probe import LinearProbe, wrap


class EncoderWatch(L.Callback):
    """Records, after every backward, whether any encoder parameter got a gradient and the encoder's mode."""

    def __init__(self) -> None:
        self.grads, self.training = [], []

    def on_after_backward(self, trainer, pl_module) -> None:
        enc = pl_module.model.encoder
        self.grads.append(any(p.grad is not None for p in enc.parameters()))
        self.training.append(enc.training or any(m.training for m in enc.modules()))


def test_probe_heads_are_batchnorm_without_affine_and_linear():
    probe = LinearProbe(create_model("deepavfusion", 5, "tiny", audio_shape=(32, 160), video_shape=(16, 32, 32)), 5)
    assert set(probe.probes) == {"audio", "video", "fusion"}
    for head in probe.probes.values():
        bn, linear = head
        assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and isinstance(linear, nn.Linear)
    probe.train()  # whoever calls train(), the encoder stays in eval mode
    assert probe.probes.training and not any(m.training for m in probe.encoder.modules())
    one = probe(torch.randn(1, 1, 32, 160), torch.randn(1, 3, 16, 32, 32))  # one clip in training: running stats
    assert torch.isfinite(one.logits).all() and one.logits.shape == (1, 5)
    trainable = {n for n, p in probe.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("probes.") for n in trainable)


@pytest.mark.parametrize("fusion", ["late", "zorro"])
def test_linear_probe_fit_leaves_the_encoder_untouched(fusion, tiny_synth_root, tmp_path):
    from fusionbench.train import _trainer, build

    cfg = load_config([
        "preset=tiny", f"fusion={fusion}", f"data.root={tiny_synth_root}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.synth.num_clips=40", "data.batch_size=8", "train.max_epochs=2", "train.progress=false",
        "train.protocol=linear_probe", "train.lr=0.01",
    ])
    L.seed_everything(0)
    datamodule, task = build(cfg)
    assert isinstance(task.model, LinearProbe)
    before = {k: v.clone() for k, v in task.model.encoder.state_dict().items()}
    heads = {k: v.clone() for k, v in task.model.probes.state_dict().items()}
    watch = EncoderWatch()
    _trainer(cfg, [watch]).fit(task, datamodule=datamodule)
    assert not any(p.requires_grad for p in task.model.encoder.parameters())  # frozen
    assert watch.grads and not any(watch.grads)  # no encoder parameter ever received a gradient
    assert not any(watch.training)  # the encoder stayed in eval mode throughout
    after = task.model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights (and buffers) unchanged
    assert any(not torch.equal(heads[k], v) for k, v in task.model.probes.state_dict().items())  # the probe learnt


def test_unknown_protocol_is_a_config_error():
    with pytest.raises(ConfigError, match="train.protocol"):
        wrap(create_model("late", 3, "tiny"), "linearprobe", 3)
