"""ImageList.from_tensors: padded sizes, padding values, unpadded access."""
import pytest
import torch

from sephnet.d2.structures import ImageList


def test_pads_bottom_right_to_max_size_without_divisibility():
    a = torch.full((3, 5, 7), 1.0)
    b = torch.full((3, 9, 2), 2.0)
    il = ImageList.from_tensors([a, b], pad_value=-1.0)
    assert il.tensor.shape == (2, 3, 9, 7)
    assert il.image_sizes == [(5, 7), (9, 2)]
    assert len(il) == 2
    assert torch.equal(il[0], a) and torch.equal(il[1], b)
    assert (il.tensor[0, :, 5:, :] == -1).all() and (il.tensor[1, :, :, 2:] == -1).all()
    assert il.tensor.is_contiguous()


@pytest.mark.parametrize("divisibility, expected", [(32, (64, 32)), (1, (33, 20)), (0, (33, 20))])
def test_size_divisibility_rounds_up(divisibility, expected):
    il = ImageList.from_tensors([torch.ones(1, 33, 4), torch.ones(1, 8, 20)], size_divisibility=divisibility)
    assert tuple(il.tensor.shape[-2:]) == expected
    total_ones = il.tensor.sum().item()
    assert total_ones == 33 * 4 + 8 * 20  # everything else is the default pad value 0


def test_single_image_and_2d_images_and_exact_multiple():
    il = ImageList.from_tensors([torch.ones(64, 32)], size_divisibility=32)
    assert il.tensor.shape == (1, 64, 32)
    il2 = ImageList.from_tensors((torch.ones(3, 10, 10),), size_divisibility=32, pad_value=5.0)
    assert il2.tensor.shape == (1, 3, 32, 32)
    assert il2.tensor[0, 0, 31, 31] == 5.0 and il2.tensor[0, 0, 9, 9] == 1.0


def test_dtype_device_and_to():
    il = ImageList.from_tensors([torch.zeros(3, 4, 4, dtype=torch.uint8)])
    assert il.tensor.dtype == torch.uint8 and il.device == torch.device("cpu")
    f = il.to(dtype=torch.float32)
    assert f.tensor.dtype == torch.float32 and f.image_sizes is il.image_sizes


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        ImageList.from_tensors([])
    with pytest.raises(AssertionError, match="leading"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match="not a Tensor"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), [[0.0]]])
    with pytest.raises(ValueError, match="list or tuple"):
        ImageList.from_tensors(torch.zeros(2, 3, 4, 4))
