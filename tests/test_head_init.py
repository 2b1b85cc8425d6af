"""``head_init`` is shared by every fusion: ``zeros`` (MBT) gives zero logits at initialisation, the default does not."""
import pytest
import torch

from fusionbench.registry import create_model, list_fusions


@pytest.mark.parametrize("name", list_fusions())
def test_head_init_applies_to_every_head(name):
    torch.manual_seed(0)
    audio, video = torch.randn(2, 1, 32, 160), torch.randn(2, 3, 16, 32, 32)
    zero = create_model(name, 5, "tiny", head_init="zeros").eval()
    out = zero(audio=audio, video=video)
    assert all(torch.count_nonzero(s) == 0 for s in out.streams.values()), "a head escaped head_init=zeros"
    default = create_model(name, 5, "tiny").eval()
    assert all(torch.count_nonzero(s) > 0 for s in default(audio=audio, video=video).streams.values())
    with pytest.raises(ValueError, match="head_init"):
        create_model(name, 5, "tiny", head_init="ones")
