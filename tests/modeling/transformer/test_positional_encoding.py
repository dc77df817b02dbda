"""DETR's sine positional encoding against its formula, written out per cell."""
import math

import pytest
import torch

from sephnet.modeling.transformer import SinePositionalEncoding


def _by_hand(y, x, height, width, d=4, temperature=10000.0, eps=1e-6):
    """Channels at 1-based (y, x) of a valid height x width grid: rows first, then columns;
    frequency of channel i is temperature ** (2 * (i // 2) / d), sin on even i, cos on odd."""
    out = []
    for value, extent in ((y, height), (x, width)):
        pos = value / (extent + eps) * 2 * math.pi
        for i in range(d):
            angle = pos / temperature ** (2 * (i // 2) / d)
            out.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
    return out


def test_encoding_of_a_2x3_grid_matches_the_formula():
    enc = SinePositionalEncoding(num_pos_feats=4)(torch.zeros(1, 2, 3, dtype=torch.bool))
    assert enc.shape == (1, 8, 2, 3)
    for r in range(2):
        for c in range(3):
            expected = torch.tensor(_by_hand(r + 1, c + 1, 2, 3))
            torch.testing.assert_close(enc[0, :, r, c], expected, atol=1e-6, rtol=0)


def test_padding_is_not_counted_valid_cells_match_an_unpadded_grid():
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    mask[1, :, 2] = True  # image 1 is 2x2, padded to 2x3
    enc = SinePositionalEncoding(num_pos_feats=4)(mask)
    alone = SinePositionalEncoding(num_pos_feats=4)(torch.zeros(1, 2, 2, dtype=torch.bool))
    torch.testing.assert_close(enc[1, :, :, :2], alone[0])
    torch.testing.assert_close(enc[0], SinePositionalEncoding(num_pos_feats=4)(mask[:1])[0])


def test_without_normalisation_positions_are_raw_counts():
    enc = SinePositionalEncoding(num_pos_feats=2, normalize=False)(torch.zeros(1, 1, 2, dtype=torch.bool))
    # d = 2: both channels of an axis have frequency 1; column 2 -> (sin 2, cos 2)
    torch.testing.assert_close(enc[0, 2:, 0, 1], torch.tensor([math.sin(2.0), math.cos(2.0)]))


def test_refuses_no_channels():
    with pytest.raises(ValueError, match="num_pos_feats"):
        SinePositionalEncoding(num_pos_feats=0)
