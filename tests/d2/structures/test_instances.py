"""Instances: fields, indexing, concatenation and the errors detectron2 raises."""
import copy
import pickle

import pytest
import torch

from sephnet.d2.structures import Boxes, Instances, PolygonMasks


def _make(n: int = 3, offset: float = 0.0, with_list: bool = True) -> Instances:
    inst = Instances((20, 30))
    inst.gt_boxes = Boxes(torch.arange(4 * n, dtype=torch.float32).view(n, 4) + offset)
    inst.gt_classes = torch.arange(n) + int(offset)
    if with_list:  # lists only support int and slice indices
        inst.names = [f"obj{i + int(offset)}" for i in range(n)]
    return inst


def test_fields_set_get_has_remove():
    inst = Instances((20, 30), scores=torch.tensor([0.5, 0.25]))
    assert inst.image_size == (20, 30)
    assert inst.has("scores") and not inst.has("pred_classes")
    inst.set("pred_classes", torch.tensor([1, 2]))
    assert inst.get("pred_classes").tolist() == [1, 2]
    assert inst.pred_classes is inst.get_fields()["pred_classes"]
    assert list(inst.get_fields()) == ["scores", "pred_classes"]
    inst.remove("scores")
    assert not inst.has("scores")
    with pytest.raises(AttributeError, match="Cannot find field 'scores'"):
        inst.scores
    with pytest.raises(KeyError):
        inst.get("scores")
    assert len(inst) == 2


def test_length_mismatch_raises_assertion_and_value_error():
    inst = Instances((5, 5), scores=torch.zeros(3))
    with pytest.raises(AssertionError, match="Adding a field of length 2 to a Instances of length 3"):
        inst.labels = torch.zeros(2)
    with pytest.raises(ValueError, match="'labels'"):
        inst.set("labels", [1])
    assert not inst.has("labels")


def test_empty_instances_len_and_iter():
    inst = Instances((5, 5))
    with pytest.raises(NotImplementedError):
        len(inst)
    with pytest.raises(NotImplementedError):
        iter(_make())


@pytest.mark.parametrize(
    "index, expected",
    [
        (1, [1]),
        (-1, [2]),
        (slice(0, 2), [0, 1]),
        (torch.tensor([True, False, True]), [0, 2]),
        (torch.tensor([2, 0]), [2, 0]),
    ],
)
def test_indexing_applies_to_every_field(index, expected):
    inst = _make(with_list=not isinstance(index, torch.Tensor))
    sub = inst[index]
    assert isinstance(sub, Instances) and sub.image_size == (20, 30)
    assert sub.gt_classes.tolist() == expected
    assert sub.gt_boxes.tensor[:, 0].tolist() == [4.0 * i for i in expected]
    assert len(sub) == len(expected)


def test_int_index_keeps_list_fields_as_lists():
    sub = _make()[1]
    assert sub.names == ["obj1"]
    assert sub.gt_classes.shape == (1,)


def test_int_index_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        _make()[3]
    with pytest.raises(IndexError):
        _make()[-4]


def test_cat_tensors_lists_and_structures():
    a, b = _make(2), _make(3, offset=10.0)
    a.polys = PolygonMasks([[[0, 0, 1, 0, 1, 1]]] * 2)
    b.polys = PolygonMasks([[[0, 0, 2, 0, 2, 2]]] * 3)
    c = Instances.cat([a, b])
    assert len(c) == 5
    assert c.gt_classes.tolist() == [0, 1, 10, 11, 12]
    assert c.names == ["obj0", "obj1", "obj10", "obj11", "obj12"]
    assert c.gt_boxes.tensor[:, 0].tolist() == [0, 4, 10, 14, 18]
    assert len(c.polys) == 5
    single = _make()
    assert Instances.cat([single]) is single


def test_cat_errors():
    with pytest.raises(AssertionError):
        Instances.cat([])
    with pytest.raises(ValueError, match="image sizes differ"):
        Instances.cat([_make(), Instances((1, 1), gt_classes=torch.zeros(1))])
    odd = Instances((20, 30), thing=range(2))
    with pytest.raises(ValueError, match="Unsupported type"):
        Instances.cat([odd, odd])


def test_to_and_str_and_pickle():
    inst = _make(2)
    moved = inst.to("cpu")
    assert moved is not inst and moved.names == inst.names
    assert torch.equal(moved.gt_classes, inst.gt_classes)
    text = str(inst)
    assert text.startswith("Instances(num_instances=2, image_height=20, image_width=30, fields=[gt_boxes: Boxes(")
    restored = pickle.loads(pickle.dumps(inst))
    assert restored.gt_classes.tolist() == [0, 1] and restored.image_size == (20, 30)
    copied = copy.deepcopy(inst)
    assert copied.names == inst.names and copied.gt_classes is not inst.gt_classes


def test_private_attributes_are_not_fields():
    inst = _make(2)
    inst._cache = "x"
    assert "_cache" not in inst.get_fields()
