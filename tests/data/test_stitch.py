"""The original's stitch augmentation (MODEL.SEPH.STITCH.PROB): layout, pixels and boxes."""
import os

import numpy as np
import pytest
import torch

from sephnet.backend import Boxes, Instances, get_cfg
from sephnet.config import add_sephnet_config, validate_sephnet_config
from sephnet.data.stitch import fit_into, stitch_batches, stitch_pair

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _item(h, w, value, boxes, classes):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor(classes)
    image = torch.full((3, h, w), value, dtype=torch.uint8)
    return {"image": image, "instances": inst, "file_name": f"{value}.jpg", "height": h, "width": w}


def test_fit_into_keeps_the_aspect_and_binds_one_side():
    assert fit_into(200, 100, 100, 80) == (100, 50)   # width binds
    assert fit_into(100, 200, 100, 80) == (40, 80)    # height binds
    assert fit_into(0, 5, 30, 20) == (30, 20)


def test_wide_images_are_stacked_by_value():
    first = _item(50, 100, 10, [[0, 0, 100, 50], [10, 20, 30, 40]], [1, 2])
    second = _item(40, 100, 20, [[50, 0, 100, 40]], [3])
    out = stitch_pair(first, second, canvas=(100, 100))
    # stacked: each into 50 x 100 -> first 100 x 50 (as is), second 100 x 40 at y = 50
    img = out["image"]
    assert img.shape == (3, 100, 100) and img.dtype == torch.uint8
    assert (img[:, :50, :] == 10).all() and (img[:, 50:90, :] == 20).all()
    assert (img[:, 90:, :] == 0).all()
    inst = out["instances"]
    assert inst.image_size == (100, 100)
    torch.testing.assert_close(
        inst.gt_boxes.tensor,
        torch.tensor([[0.0, 0, 100, 50], [10, 20, 30, 40], [50, 50, 100, 90]]),
    )
    assert inst.gt_classes.tolist() == [1, 2, 3]
    assert (out["height"], out["width"], out["file_name"]) == (100, 100, "10.jpg")


def test_tall_images_go_side_by_side_and_are_scaled():
    first = _item(100, 40, 10, [[0, 0, 40, 100]], [0])
    second = _item(200, 50, 20, [[10, 20, 30, 40]], [1])
    out = stitch_pair(first, second, canvas=(100, 100))
    # side by side: halves 100 x 50; first fits as 40 x 100; second (50 x 200) as 25 x 100
    img = out["image"]
    assert (img[:, :, :40] == 10).all() and (img[:, :, 40:50] == 0).all()
    assert (img[:, :, 50:75] == 20).all() and (img[:, :, 75:] == 0).all()
    torch.testing.assert_close(
        out["instances"].gt_boxes.tensor,
        torch.tensor([[0.0, 0, 40, 100], [50 + 5, 10, 50 + 15, 20]]),
    )


def test_batches_are_stitched_with_the_given_probability():
    batch = [_item(50, 100, v, [[0, 0, 10, 10]], [0]) for v in (1, 2, 3)]
    never = list(stitch_batches([batch] * 5, 0.0, np.random.default_rng(0)))
    assert all(b is batch for b in never)
    always = list(stitch_batches([batch] * 20, 1.0, np.random.default_rng(0)))
    for out in always:
        stitched = [x for x in out if len(x["instances"]) == 2]
        assert len(stitched) == 1 and len(out) == 3
        assert stitched[0]["image"].shape == (3, 50, 100)
    single = [_item(50, 100, 1, [[0, 0, 10, 10]], [0])]
    assert list(stitch_batches([single], 1.0))[0] is single
    counts = sum(
        any(len(x["instances"]) == 2 for x in b)
        for b in stitch_batches([batch] * 2000, 0.2, np.random.default_rng(1))
    )
    assert 320 < counts < 480  # Binomial(2000, 0.2): mean 400, sd ~18


class _CountingLoader:
    """A resumable stand-in for the core's train loader: batch k holds three items of value
    k, k+1, k+2 (mod 250); its state is the number of batches handed out."""

    def __init__(self):
        self.position = 0

    def __iter__(self):
        while True:
            k = self.position
            self.position += 1
            yield [_item(50, 100, (k + v) % 250, [[0, 0, 10, 10]], [0]) for v in range(3)]

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def _signature(batch):
    """What stitching did to a batch: per item, its first pixel and its number of boxes."""
    return [(int(x["image"][0, 0, 0]), len(x["instances"])) for x in batch]


def test_a_resumable_loader_stitches_on_from_its_saved_state():
    straight = iter(stitch_batches(_CountingLoader(), 0.5, np.random.default_rng(3)))
    first = stitch_batches(_CountingLoader(), 0.5, np.random.default_rng(3))
    stream = iter(first)
    for _ in range(7):
        assert _signature(next(stream)) == _signature(next(straight))
    state = first.state_dict()
    assert state["loader"] == {"position": 7}
    # a new run: fresh loader and generator (another seed), then the saved state
    resumed = stitch_batches(_CountingLoader(), 0.5, np.random.default_rng(99))
    resumed.load_state_dict(state)
    again = iter(resumed)
    expected = [_signature(next(straight)) for _ in range(20)]
    assert [_signature(next(again)) for _ in range(20)] == expected
    assert any(count == 2 for sig in expected for _, count in sig)  # some were stitched
    with pytest.raises(KeyError, match="lacks \\['stitch_rng'\\]"):
        resumed.load_state_dict({"loader": {"position": 0}})


def test_a_plain_iterable_is_wrapped_without_state():
    wrapped = stitch_batches([[_item(50, 100, 1, [[0, 0, 10, 10]], [0])]], 0.5)
    assert not hasattr(wrapped, "state_dict")


def test_masks_are_refused():
    item = _item(10, 10, 1, [[0, 0, 5, 5]], [0])
    item["instances"].gt_masks = torch.zeros(1, 10, 10)
    with pytest.raises(ValueError, match="gt_masks"):
        stitch_pair(item, item, (10, 10))


def test_key_is_validated_and_sephnv15_sets_it(sephnet_cfg):
    cfg = sephnet_cfg()
    assert cfg.MODEL.SEPH.STITCH.PROB == 0.0
    cfg.MODEL.SEPH.STITCH.PROB = 1.5
    with pytest.raises(ValueError, match="STITCH.PROB=1.5"):
        validate_sephnet_config(cfg)
    cfg.MODEL.SEPH.STITCH.PROB = 0.2
    cfg.MODEL.MASK_ON = True
    with pytest.raises(ValueError, match="boxes only"):
        validate_sephnet_config(cfg)
    row = get_cfg()
    add_sephnet_config(row)
    row.merge_from_file(os.path.join(REPO, "configs", "coco", "Mask-RCNN-FPN-sephNv15.yaml"))
    assert row.MODEL.SEPH.STITCH.PROB == 0.2
