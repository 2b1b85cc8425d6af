from fusionbench.nn.block import Attention, Block, DropPath, make_blocks
from fusionbench.nn.model import FusionModel, FusionOutput, mean_stream_loss
from fusionbench.nn.tokenizers import AudioPatchEmbed, AVTokenizer, VideoTubeletEmbed

__all__ = [
    "Attention", "Block", "DropPath", "make_blocks", "FusionModel", "FusionOutput", "mean_stream_loss",
    "AudioPatchEmbed", "AVTokenizer", "VideoTubeletEmbed",
]
