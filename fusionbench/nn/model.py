"""What every fusion model shares: the output contract, the tokenizers, and the default training-loss rule."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from fusionbench.nn.tokenizers import AVTokenizer


HEAD_INITS = ("normal", "zeros", "xavier")


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
        head_init: str = "normal",
        patch_embed: str = "learned",
        pos_init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init={head_init!r} is not one of {', '.join(HEAD_INITS)}")
        self.head_init = head_init
        self.num_classes = num_classes
        self.dim, self.depth, self.heads, self.mlp_ratio, self.drop_path = dim, depth, heads, mlp_ratio, drop_path
        self.tokenizer = AVTokenizer(dim, audio_shape, audio_patch, video_shape, video_patch, patch_embed, pos_init_std)

    def init_head(self, head: nn.Linear) -> None:
        """Initialise a classification head by ``head_init`` (shared by every fusion, so conditions stay identical).

        ``normal`` (fusionbench's default): trunc-normal σ 0.02, zero bias. ``zeros``: MBT's zero-initialised
        ``output_projection``. ``xavier``: DeepAVFusion's. Zero heads suit fine-tuning a pretrained backbone; trained
        from scratch on a label with no linear signal at initialisation (``modsum``: an XOR of the two modalities)
        they are a saddle point — head and backbone gradients both vanish and the loss stays at ln C (measured).
        """
        if self.head_init == "zeros":
            nn.init.zeros_(head.weight)
        elif self.head_init == "xavier":
            nn.init.xavier_uniform_(head.weight)
        else:
            nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)

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
