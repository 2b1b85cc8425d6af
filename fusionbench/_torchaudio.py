"""Import torchaudio on a CPU-only torch.

torchaudio 2.11 wheels link CUDA libraries; on the CPU build of torch 2.13 its compiled extension fails to load
(``OSError: libc10_cuda.so``). Its pure-PyTorch parts (``compliance.kaldi.fbank``, ``transforms``, ``functional``)
work once the extension loader is told the extension is absent. Where the extension loads, this is a no-op.
"""
from __future__ import annotations

import sys
from types import ModuleType

_cached: ModuleType | None = None


def import_torchaudio() -> ModuleType:
    """Return the torchaudio module, working around the missing CUDA extension on CPU torch."""
    global _cached
    if _cached is not None:
        return _cached
    try:
        import torchaudio

        _cached = torchaudio
        return torchaudio
    except OSError as exc:  # CPU torch: the CUDA-linked extension cannot load
        first_error = exc
    utils = sys.modules.get("torchaudio._extension.utils")
    if utils is None:
        raise first_error
    for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
        if name != "torchaudio._extension.utils" and not name.startswith("torchaudio._internal"):
            del sys.modules[name]
    utils._load_lib = lambda lib: False  # report the extension as "not built"
    import torchaudio

    _cached = torchaudio
    return torchaudio
