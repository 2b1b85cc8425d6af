"""What every fusion model shares: the output contract, the tokenizers, and the default training-loss rule."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from fusionbench.nn.tokenizers import AVTokenizer


@dataclass
class FusionOutput:
    """``logits`` (B, C): the model's own fused prediction. ``streams``: per-readout logits the method defines."""

    logits: Tensor
    streams: dict[str, Tensor] = field(default_factory=dict)


class FusionModel(nn.Module):
    """Base class: shared tokenizers over the common geometry; subclasses define the routing.

    ``forward(audio=None, video=None)`` takes either or both modalities; a missing one is ``None`` and the subclass's
    documented unimodal policy applies (never a silent zero tensor).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        drop_path: float,
        audio_shape: tuple[int, int],
        audio_patch: tuple[int, int],
        video_shape: tuple[int, int, int],
        video_patch: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dim, self.depth, self.heads, self.mlp_ratio, self.drop_path = dim, depth, heads, mlp_ratio, drop_path
        self.tokenizer = AVTokenizer(dim, audio_shape, audio_patch, video_shape, video_patch)

    @property
    def num_audio_tokens(self) -> int:
        return self.tokenizer.audio.num_tokens

    @property
    def num_video_tokens(self) -> int:
        return self.tokenizer.video.num_tokens

    def loss(self, out: FusionOutput, target: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Training loss; default: the criterion on the fused logits. Methods that train per stream override this."""
        return criterion(out.logits, target)


def mean_stream_loss(out: FusionOutput, target: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """MBT rule: mean over the present streams of the per-stream loss."""
    return sum(criterion(logits, target) for logits in out.streams.values()) / len(out.streams)
