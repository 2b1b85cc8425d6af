"""The import shim relies on torchaudio 2.11's extension loader; pin the version it was verified with."""
import torch

from fusionbench._torchaudio import import_torchaudio


def test_shim_imports_pure_pytorch_parts():
    ta = import_torchaudio()
    assert ta.__version__.startswith("2.11.")
    from torchaudio.compliance import kaldi

    feats = kaldi.fbank(torch.randn(1, 16000), num_mel_bins=32, dither=0.0, sample_frequency=16000)
    assert feats.shape == (98, 32) and torch.isfinite(feats).all()
    masked = ta.transforms.FrequencyMasking(8)(torch.ones(1, 32, 50))
    assert masked.shape == (1, 32, 50)
