"""Size-expert head (V9): routing by sqrt(area) by value, each ROI computed by its own expert,
the stacked-linear quirk, the size-carrying pooler, config checks."""
import pytest
import torch

from sephnet.backend import Boxes, ShapeSpec
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures
from sephnet.modeling.roi_heads.box_heads.size_expert_head import (
    BoxSizeROIPooler,
    SizedFeatures,
    SizeExpertHead,
    expert_index,
)

C, S = 8, 5
SHAPE = ShapeSpec(channels=C, height=S, width=S)


#: A small SizeExpertHead (the keys each test starts from).
HEAD_KEYS = {
    "MODEL.ROI_HEADS.NAME": "SephStandardROIHeads",
    "MODEL.ROI_HEADS.NUM_CLASSES": 3,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": S,
    "MODEL.SEPH.BOX_HEAD.NAME": "SizeExpertHead",
    "MODEL.SEPH.BOX_HEAD.NUM_CONV": 1,
    "MODEL.SEPH.BOX_HEAD.CONV_DIM": 8,
    "MODEL.SEPH.BOX_HEAD.NUM_FC": 2,
    "MODEL.SEPH.BOX_HEAD.FC_DIM": 16,
}


def test_expert_index_bins_of_the_log():
    sizes = torch.tensor([0.0, 15.9, 16.0, 31.9, 32.0, 47.9, 48.0, 1000.0])
    assert expert_index(sizes, 4, 16.0).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert expert_index(sizes, 2, 30.0).tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_pooler_carries_sqrt_area_in_box_order():
    class Pool(torch.nn.Module):  # stand-in: one feature row per box, value = image index
        def forward(self, x, box_lists):
            return torch.cat([torch.full((len(b), 1), float(i)) for i, b in enumerate(box_lists)])

    pooler = BoxSizeROIPooler(Pool())
    boxes = [Boxes(torch.tensor([[0.0, 0.0, 4.0, 9.0]])), Boxes(torch.zeros(0, 4)),
             Boxes(torch.tensor([[1.0, 1.0, 17.0, 5.0], [2.0, 2.0, 2.0, 8.0]]))]
    out = pooler([torch.zeros(3, 1, 4, 4)], boxes)
    assert isinstance(out, SizedFeatures)
    assert out.sizes.tolist() == [6.0, 8.0, 0.0]
    assert out.features[:, 0].tolist() == [0.0, 2.0, 2.0]


def _sized(r=12, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(r, C, S, S, generator=g).requires_grad_(requires_grad)
    sizes = torch.tensor([3.0, 20.0, 40.0, 70.0] * (r // 4))[torch.randperm(r, generator=g)]
    return SizedFeatures(feats, sizes)


def test_each_roi_is_computed_by_its_own_expert_alone(sephnet_cfg):
    torch.manual_seed(0)
    head = SizeExpertHead(sephnet_cfg(HEAD_KEYS, validate=True), SHAPE)
    x = _sized()
    out = head(x)
    assert isinstance(out, DecoupledFeatures) and out.iou is None
    assert out.cls.shape == (12, 16) and out.box.shape == (12, 8, S, S)
    for i in range(12):
        e = int(x.sizes[i] // 16) if x.sizes[i] < 48 else 3
        expert = head.experts[e]
        torch.testing.assert_close(out.cls[i:i + 1], expert.cls_tower(x.features[i:i + 1]))
        torch.testing.assert_close(out.box[i:i + 1], expert.box_tower(x.features[i:i + 1]))
    # experts really differ
    first, second = (head.experts[k].cls_tower(x.features) for k in (0, 1))
    assert (first - second).abs().max() > 0


@pytest.mark.parametrize("agnostic,box_dim", [(False, 12), (True, 4)])
def test_stacked_linear_quirk_adds_shared_linear_maps(agnostic, box_dim, sephnet_cfg):
    torch.manual_seed(1)
    cfg = sephnet_cfg({**HEAD_KEYS, **{"MODEL.SEPH.SIZE_EXPERT_HEAD.STACKED_LINEAR": True,
                      "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": agnostic}}, validate=True)
    head = SizeExpertHead(cfg, SHAPE)
    assert head.output_shapes == {"cls": ShapeSpec(channels=4), "box": ShapeSpec(channels=box_dim)}
    x = _sized()
    out = head(x)
    plain = SizeExpertHead(sephnet_cfg(HEAD_KEYS, validate=True), SHAPE)
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if "linear" not in k})
    ref = plain(x)
    torch.testing.assert_close(out.cls, head.cls_linear(ref.cls))
    torch.testing.assert_close(out.box, head.box_linear(ref.box.flatten(1)))


def test_backward_reaches_every_expert_and_empty_input(sephnet_cfg):
    head = SizeExpertHead(sephnet_cfg(HEAD_KEYS, validate=True), SHAPE)
    x = _sized(requires_grad=True)
    out = head(x)
    (out.cls.sum() + out.box.sum()).backward()
    assert x.features.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in head.parameters() if p.dim() > 1)
    empty = head(SizedFeatures(torch.zeros(0, C, S, S), torch.zeros(0)))
    assert empty.cls.shape == (0, 16) and empty.box.shape == (0, 8, S, S)


def test_plain_tensor_is_rejected(sephnet_cfg):
    with pytest.raises(TypeError, match="SizedFeatures"):
        SizeExpertHead(sephnet_cfg(HEAD_KEYS, validate=True), SHAPE)(torch.zeros(1, C, S, S))


@pytest.mark.parametrize(
    "keys,match",
    [
        ({"MODEL.SEPH.SIZE_EXPERT_HEAD.NUM_EXPERTS": 0}, "NUM_EXPERTS=0"),
        ({"MODEL.SEPH.SIZE_EXPERT_HEAD.SIZE_STEP": 0.0}, "SIZE_STEP=0.0"),
        ({"MODEL.SEPH.BOX_HEAD.NUM_FC": 0}, "NUM_FC"),
        ({"MODEL.SEPH.ROI_HOOK.NAME": "OneHeadSEROIHeadsHook"}, "ROI_HOOK.NAME"),
    ],
)
def test_config_errors_name_the_key(keys, match, sephnet_cfg):
    with pytest.raises(ValueError, match=match):
        sephnet_cfg({**HEAD_KEYS, **keys}, validate=True)
