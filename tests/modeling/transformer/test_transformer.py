"""DETR's transformer layers: PyTorch's computation when there is no positional encoding,
the encoding reaching queries/keys only, padded keys ignored, output shapes."""
import pytest
import torch
from torch import nn

from sephnet.modeling.transformer import DETRDecoderLayer, DETREncoderLayer, DETRTransformer


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_encoder_layer_without_pos_is_pytorchs_layer():
    ours = DETREncoderLayer(8, 2, 16, dropout=0.0).eval()
    theirs = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    theirs.load_state_dict(ours.state_dict())
    src = torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    with torch.no_grad():
        torch.testing.assert_close(ours(src, None, mask), theirs(src, src_key_padding_mask=mask))


def test_decoder_layer_with_zero_query_pos_is_pytorchs_layer():
    ours = DETRDecoderLayer(8, 2, 16, dropout=0.0).eval()
    theirs = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    theirs.load_state_dict(ours.state_dict())
    tgt, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(tgt, memory, torch.zeros_like(tgt), None, None), theirs(tgt, memory)
        )


def test_encoder_pos_changes_attention_weights_not_values():
    """With one key (S = 1) attention weights are all 1, so q/k do not matter: the output
    must not depend on pos (it would if pos were added to the value or the residual)."""
    layer = DETREncoderLayer(8, 2, 16, dropout=0.0).eval()
    src = torch.randn(3, 1, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(src, torch.randn(3, 1, 8), None), layer(src, None, None))


def test_padded_memory_does_not_change_the_output():
    model = DETRTransformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                            dim_feedforward=16, dropout=0.0).eval()
    src, pos = torch.randn(1, 8, 2, 3), torch.randn(1, 8, 2, 3)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[:, :, 2] = True
    queries = torch.randn(4, 8)
    other = src.clone()
    other[..., 2] = 100.0
    with torch.no_grad():
        out = model(src, mask, queries, pos)
        assert out.shape == (2, 1, 4, 8)
        torch.testing.assert_close(model(other, mask, queries, pos), out)


def test_transformer_refuses_bad_sizes():
    with pytest.raises(ValueError, match="nhead"):
        DETRTransformer(d_model=10, nhead=4)
    with pytest.raises(ValueError, match="num_decoder_layers"):
        DETRTransformer(d_model=8, nhead=2, num_decoder_layers=0)
