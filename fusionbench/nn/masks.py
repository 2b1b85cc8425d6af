"""Token types and type-vector masks: who may attend to whom, built by broadcasting two type vectors.

A routing policy is a rule over (query type, key type). A sequence's token types are one integer vector; the bool
attention mask (True = may attend) is that rule applied to ``types_q[:, None]`` and ``types_k[None, :]``. Where a
mask only separates groups, the fusions compute the groups separately and test the two forms against each other.
"""
from __future__ import annotations

from enum import IntEnum

import torch
from torch import Tensor


class TokenType(IntEnum):
    AUDIO = 0
    VIDEO = 1
    FUSION = 2
    GLOBAL = 3  # a readout query that may read every token


def token_types(*groups: tuple[TokenType, int], device: torch.device | None = None) -> Tensor:
    """``token_types((AUDIO, 3), (FUSION, 2))`` → tensor([0, 0, 0, 2, 2]): one type per token, in sequence order."""
    return torch.cat([torch.full((n,), int(t), dtype=torch.long, device=device) for t, n in groups])  # (N,)
