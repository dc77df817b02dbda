"""Every config of the experiment log builds what its row's label says.

The facts below are the log's own words: each row's label (as the log writes it) and the
log's definitions of its recipes "1)" ... "5)". A label is read as a sequence of terms; each
term names component facts (TERMS), and a recipe name expands to its definition first. A row's
expected facts are its table's context (what the table's header or section states for every
row), then its terms, later terms overriding earlier ones. Each fact is checked twice: on the
merged config (the keys that choose the component) and on the model built from it (module
types, norms and activations present or absent). The model is built on the "meta" device: the
modules and their settings are the real ones, without the cost of initialising weights.
"""
import os
import re
from typing import Dict, List, Tuple

import pytest
import torch
from torch import nn

import sephnet.modeling  # noqa: F401  (registration)
from sephnet.backend import build_model
from sephnet.config import validate_sephnet_config
from sephnet.layers.evonorm import EvoNormS0

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------------- the log's facts

# The log's definitions of its recipes (the notes under its FPN-3 table), and the original
# config behind the one label that is a project name ("...-sephNv15"), in the same words.
RECIPES = {
    "1)": "use nonlocal and fusebackbone+cosine",
    "2)": "use cosine + BalanceBackboneHook + Mask Head EvoNormS0",
    "3)": "sephv2+cosine+EvoNormS0+ASTTMatcher+class loss linear scalear+new rcn sample"
          "+p2 output",
    "4)": "sephv2+cosine+EvoNormS0+ASTTMatcher3+new rcn sample",
    "5)": "sephv2+cosine+EvoNormS0+ASTTMatcher4+new rcn sample",
    "MaskRCNNFPNCOCODemon-sephNv15": "sephv2+cosine+EvoNormS0+ASTTMatcher4+new rcn sample"
                                     "+roi nr=512+p2-p6 output+GIOUoutputs+reg loss x8",
}

PIECEWISE, COSINE = "WarmupMultiStepLR", "WarmupCosineLR"
P3_P6 = ["p3", "p4", "p5", "p6"]

# What a table's header or section states for all its rows (the log's bullets: ROI heads,
# anchors, "Head normal: BN", "new rcn sample"), in facts.
CONTEXTS = {
    "C3 table": {
        "roi_features": ["p3"], "rois": 128, "sampler": "uniform", "rpn_matcher": "max_iou",
        "box_head": "NormFCBoxHead", "box_norm": "GN", "box_relu": True,
        "mask_norm": "BN", "mask_relu": True, "anchors": 3,
        "anchor_sizes": [64, 128, 256, 512], "backbone_hooks": [],
        "cls_weighting": "none", "reg_loss": ("smooth_l1", 1.0), "roi_heads": "standard",
    },
    "FPN-3 table": {
        "roi_features": P3_P6, "rois": 128, "sampler": "uniform", "rpn_matcher": "max_iou",
        "anchors": 3, "anchor_sizes": [64, 128, 256, 512], "backbone_hooks": [],
        "cls_weighting": "none", "reg_loss": ("smooth_l1", 1.0), "roi_heads": "standard",
        "proposal_generator": "SephRPN", "rpn_norm": None,
    },
    # The FPN-3 table's header bullet, for its row that names no norm ("sephv2").
    "Head normal: BN": {"box_norm": "BN"},
    # The sephv10 section: "Head normal: EnvNormS0", "new rcn sample".
    "sephv10 section": {"box_norm": "EvoNormS0", "box_relu": False, "sampler": "balanced"},
    # The Cascade run (after 2020-09-02) used the outputs that weighted the class loss.
    "after 2020-09-02": {"cls_weighting": "square"},
    # Rows whose box loss differs from the table's Huber x1 without the label saying so
    # (sephv9's x3, recipe 3)'s weighted GIoU x6): not checked.
    "box loss not in label": {"reg_loss": None},
}

# Term (regular expression over one term of a label) -> facts. Matched in order; the first
# match wins. A recipe name is expanded through RECIPES before matching.
TERMS: List[Tuple[str, Dict]] = [
    (r"^base line\(1\)$", {"anchor_sizes": [120, 240, 480, 512], "lr": PIECEWISE}),
    (r"^base line$", {
        "box_head": "NormFCBoxHead", "box_norm": "GN", "box_relu": True,
        "mask_norm": "BN", "mask_relu": True, "lr": PIECEWISE,
    }),
    (r"^use nolocal$", {"backbone_hooks": ["NonLocalBackboneHook"]}),
    (r"^use fusebackbone$", {"backbone_hooks": ["FusionBackboneHook"], "roi_features": ["f3"]}),
    (r"^use nonlocal and fusebackbone$", {
        "backbone_hooks": ["NonLocalBackboneHook", "FusionBackboneHook"], "roi_features": ["f3"],
    }),
    (r"^(use )?balancebackbonehook$", {"backbone_hooks": ["BalanceBackboneHook"]}),
    (r"^(use )?cosine$", {"lr": COSINE}),
    (r"^x2$", {"max_iter": 240000}),
    (r"^(evonorms0 mask head|mask head evonorms0)$", {"mask_norm": "EvoNormS0", "mask_relu": False}),
    (r"^p3output$|^p3 output$", {"roi_features": ["p3"]}),
    (r"^p2 output$", {"roi_features": ["p2"]}),
    (r"^p2-p6 output$", {"roi_features": ["p2", "p3", "p4", "p5", "p6"]}),
    (r"^seph$", {"box_head": "TwinTowerConvFCHead", "box_relu": False}),
    (r"^sephv2$", {"box_head": "FCClsConvBoxHead", "box_relu": False}),
    (r"^bn$", {"box_norm": "BN"}),
    (r"^(envnorms0|evonorms|evonorms0)( box)?( head)?$", {"box_norm": "EvoNormS0"}),
    (r"^pred iou1$", {"iou_version": 1}),
    (r"^shared head$", {"box_head": "SharedConvHead"}),
    (r"^retinanet rpn$", {"proposal_generator": "SephRetinaNetPG", "rpn_matcher": None,
                          "anchors": None}),
    (r"^asttmatcher$", {"rpn_matcher": "ATSSMatcher"}),
    (r"^asttmatcher3$", {"rpn_matcher": "ATSSMatcher3"}),
    (r"^asttmatcher4$", {"rpn_matcher": "ATSSMatcher4"}),
    (r"^class loss linear scalear$", {"cls_weighting": "linear"}),
    (r"^new rcn sample$", {"sampler": "balanced"}),
    (r"^no balance sample$", {"sampler": "uniform"}),
    (r"^no neg balance sample$", {"sampler": "balanced_pos_only"}),
    (r"^no pos balance sample$", {"sampler": "balanced_neg_only"}),
    (r"^cls loss weight$", {"cls_weighting": "square"}),
    (r"^no cls loss weight$", {"cls_weighting": "none"}),
    (r"^roi nr=(\d+)$", {"rois": "\\1"}),
    (r"^1 anchor$", {"anchors": 1}),
    (r"^rpn evo normal$", {"rpn_norm": "EvoNormS0"}),
    (r"^multiscalepooler$", {"pooler": "MultiScaleROIPooler"}),
    # The GIoU outputs weighted the class loss from 2020-08-14 on, unless the row says "no".
    (r"^giououtputs$", {"reg_loss": ("giou", 1.0), "cls_weighting": "square"}),
    (r"^reg loss x(\d+)$", {"reg_weight": "\\1"}),
    (r"^low box reg threshold$", {"roi_iou_threshold": 0.3}),
    (r"^cascade$", {"roi_heads": "cascade"}),
    # Names without a component of their own (the config's name in parentheses, "sephv9").
    (r"^(sephv\d+(_\d+)?|seph(nv15)?v?\d*)$", {}),
]

# (table context, label as the log writes it, config under configs/coco/). "coco/Mask-RCNN-
# FPN-sephv10.yaml" is the label of the log's sephv10 section.
ROWS = [
    (["C3 table"], "base line(1)", "Mask-RCNN-FPN-C3.yaml"),
    (["C3 table"], "use nolocal", "Mask-RCNN-FPN-C3-nonlocal.yaml"),
    (["C3 table"], "use FuseBackbone", "Mask-RCNN-FPN-C3-fuse.yaml"),
    ([], "MaskRCNNFPNCOCODemon-sephNv15", "Mask-RCNN-FPN-sephNv15.yaml"),
    (["FPN-3 table"], "base line", "Mask-RCNN-FPN-3-baseline.yaml"),
    (["FPN-3 table", "base line"], "cosine+EvoNormS0 mask head",
     "Mask-RCNN-FPN-3-cosine-evonorm-mask.yaml"),
    (["FPN-3 table", "base line"], "P3output+cosine", "Mask-RCNN-FPN-3-P3-cosine.yaml"),
    (["FPN-3 table", "base line"], "1)", "Mask-RCNN-FPN-recipe1.yaml"),
    (["FPN-3 table", "base line"], "1) x2", "Mask-RCNN-FPN-recipe1-x2.yaml"),
    (["FPN-3 table", "base line"], "2)", "Mask-RCNN-FPN-recipe2.yaml"),
    (["FPN-3 table"], "seph+BN", "Mask-RCNN-FPN-seph-BN.yaml"),
    (["FPN-3 table"], "seph+cosine+EnvNormS0 box head", "Mask-RCNN-FPN-seph.yaml"),
    (["FPN-3 table", "Head normal: BN"], "sephv2", "Mask-RCNN-FPN-sephv2-BN.yaml"),
    (["FPN-3 table"], "sephv2+cosine+EvoNormS head", "Mask-RCNN-FPN-sephv2.yaml"),
    (["FPN-3 table"], "sephv2+cosine+EvoNormS head+pred iou1",
     "Mask-RCNN-FPN-sephv2-pred-iou1.yaml"),
    (["FPN-3 table", "sephv10 section"], "sephv10(shared head)", "Mask-RCNN-FPN-sephv10.yaml"),
    (["FPN-3 table", "box loss not in label"], "sephv9(retinanet rpn)",
     "Mask-RCNN-FPN-sephv9.yaml"),
    (["FPN-3 table", "box loss not in label"], "3)", "Mask-RCNN-FPN-recipe3.yaml"),
    (["FPN-3 table"], "4)", "Mask-RCNN-FPN-recipe4.yaml"),
    (["FPN-3 table"], "4) + cls loss weight (sephv14)", "Mask-RCNN-FPN-sephv14-roi128.yaml"),
    (["FPN-3 table"], "4) + cls loss weight + roi nr=512(sephv14)", "Mask-RCNN-FPN-sephv14.yaml"),
    (["FPN-3 table"], "4) + cls loss weight + roi nr=512 + 1 anchor(sephv14_1)",
     "Mask-RCNN-FPN-sephv14_1.yaml"),
    (["FPN-3 table"], "5) + cls loss weight + roi nr=512 + 1 anchor(sephv14_2)",
     "Mask-RCNN-FPN-sephv14_2.yaml"),
    (["FPN-3 table"], "4) + cls loss weight +RPN evo normal(sephv17)",
     "Mask-RCNN-FPN-sephv17.yaml"),
    (["FPN-3 table"], "4) + cls loss weight + no balance sample(sephv16)",
     "Mask-RCNN-FPN-sephv16.yaml"),
    (["FPN-3 table"], "4) + cls loss weight + no neg balance sample(sephv18)",
     "Mask-RCNN-FPN-sephv18.yaml"),
    (["FPN-3 table"], "4) + cls loss weight + no pos balance sample(sephv18_1)",
     "Mask-RCNN-FPN-sephv18_1.yaml"),
    (["FPN-3 table"], "4) + cls loss weight + multiscalepooler(sephv19)",
     "Mask-RCNN-FPN-sephv19.yaml"),
    (["FPN-3 table"], "4)+GIOUoutputs", "Mask-RCNN-FPN-recipe4-giou.yaml"),
    (["FPN-3 table"], "4)+GIOUoutputs+reg loss x4 (sephv15)", "Mask-RCNN-FPN-sephv15.yaml"),
    (["FPN-3 table"], "4)+GIOUoutputs+reg loss x8 (sephv15_1)", "Mask-RCNN-FPN-sephv15_1.yaml"),
    (["FPN-3 table"], "4)+GIOUoutputs+reg loss x12 (sephv15_2)", "Mask-RCNN-FPN-sephv15_2.yaml"),
    (["FPN-3 table"], "4)+GIOUoutputs+no cls loss weight",
     "Mask-RCNN-FPN-recipe4-giou-no-cls-loss-weight.yaml"),
    (["FPN-3 table"], "4)+GIOUoutputs+reg loss x8 + low box reg threshold(sephv21)",
     "Mask-RCNN-FPN-sephv21.yaml"),
    (["FPN-3 table"], "4) + cls loss weight+p3 output (sephv22)", "Mask-RCNN-FPN-sephv22.yaml"),
    (["FPN-3 table", "4)", "after 2020-09-02"], "Cascade", "Cascade-Mask-RCNN-FPN.yaml"),
]


# ---------------------------------------------------------------------- reading a label


def split_terms(text: str) -> List[str]:
    """"4) + cls loss weight + roi nr=512(sephv14)" -> ["4)", "cls loss weight", "roi nr=512",
    "sephv14"]: "+" separates terms, a trailing "(name)" is a term of its own."""
    terms = []
    for part in text.split("+"):
        part = part.strip()
        match = re.fullmatch(r"(.*?)\s*\(([^()]*)\)", part)
        if match and not re.fullmatch(r"base line\(1\)", part):
            terms += [t for t in (match.group(1).strip(), match.group(2).strip()) if t]
        elif re.fullmatch(r"\d\) x2", part):
            terms += part.split(" ")
        elif part:
            terms.append(part)
    return terms


def facts_of_term(term: str) -> Dict:
    if term in RECIPES:
        return facts_of_label(RECIPES[term])
    for pattern, facts in TERMS:
        match = re.fullmatch(pattern, term.lower())
        if match:
            return {k: (int(match.expand(v)) if isinstance(v, str) and "\\" in v else v)
                    for k, v in facts.items()}
    raise AssertionError(f"no fact is known for the term {term!r}; add it to TERMS")


def facts_of_label(label: str) -> Dict:
    facts: Dict = {}
    for term in split_terms(label):
        facts.update(facts_of_term(term))
    if "reg_weight" in facts:
        facts["reg_loss"] = (facts.get("reg_loss", ("giou", 1.0))[0], float(facts.pop("reg_weight")))
    return facts


def expected_facts(context: List[str], label: str) -> Dict:
    facts: Dict = {}
    for name in context:
        facts.update(CONTEXTS[name] if name in CONTEXTS else facts_of_term(name))
    facts.update(facts_of_label(label))
    return {k: v for k, v in facts.items() if v is not None}


# ------------------------------------------------------------ the facts in config and model

_NORM_TYPES = {"EvoNormS0": EvoNormS0, "BN": nn.BatchNorm2d, "GN": nn.GroupNorm}
_SAMPLERS = {
    "uniform": ("RandomROISampler", None),  # or BalancedROISampler balancing neither
    "balanced": ("BalancedROISampler", (True, True)),
    "balanced_pos_only": ("BalancedROISampler", (True, False)),
    "balanced_neg_only": ("BalancedROISampler", (False, True)),
}
_MATCHERS = {  # config name -> (class, distinguishing attributes)
    "max_iou": (None, {}),
    # The log's "ASTTMatcher": the nearest-centre ATSS matcher, as fixed on 2020-10-28 or
    # (recipe 3), run on 08-14) before.
    "ATSSMatcher": ("ATSSMatcher", {}),
    "ATSSMatcher3": ("IoUStatisticsMatcher", {"ignore_band": True, "level_weighted": False}),
    "ATSSMatcher4": ("IoUStatisticsMatcher", {"ignore_band": False, "level_weighted": False}),
}


def _first(module):
    return module[0] if isinstance(module, nn.ModuleList) else module


def _norms(module) -> set:
    return {name for name, cls in _NORM_TYPES.items()
            if any(type(m) is cls for m in module.modules())}


def _has_relu(module) -> bool:
    return any(isinstance(m, nn.ReLU) for m in module.modules())


def check_fact(key, value, cfg, model):
    """Assert one fact on the merged config and on the built model."""
    m, seph, rh = cfg.MODEL, cfg.MODEL.SEPH, model.roi_heads
    if key == "box_head":
        assert seph.BOX_HEAD.NAME == value
        assert type(_first(rh.box_head)).__name__ == value
    elif key == "box_norm":
        assert m.ROI_BOX_HEAD.NORM == value
        assert _norms(_first(rh.box_head)) == {value}
    elif key == "box_relu":
        assert _has_relu(_first(rh.box_head)) == value
    elif key == "mask_norm":
        assert m.MASK_ON and m.ROI_MASK_HEAD.NORM == value
        assert _norms(rh.mask_head) == {value}
        assert isinstance(rh.mask_head.deconv_norm, _NORM_TYPES[value])  # the deconv's too
    elif key == "mask_relu":
        assert _has_relu(rh.mask_head) == value
    elif key == "lr":
        assert cfg.SOLVER.LR_SCHEDULER_NAME == value
    elif key == "max_iter":
        assert cfg.SOLVER.MAX_ITER == value
    elif key == "roi_features":
        assert list(m.ROI_HEADS.IN_FEATURES) == value and list(rh.box_in_features) == value
    elif key == "rois":
        assert m.ROI_HEADS.BATCH_SIZE_PER_IMAGE == value and rh.batch_size_per_image == value
    elif key == "sampler":
        name, balanced = _SAMPLERS[value]
        sampler = rh.roi_sampler
        if value == "uniform" and type(sampler).__name__ == "BalancedROISampler":
            name, balanced = "BalancedROISampler", (False, False)
        assert seph.SAMPLER.NAME == name
        assert type(sampler).__name__ == name
        if balanced is not None:
            assert (seph.SAMPLER.BALANCED_POS, seph.SAMPLER.BALANCED_NEG) == balanced
            assert (sampler.balanced_pos, sampler.balanced_neg) == balanced
    elif key == "rpn_matcher":
        cls, attrs = _MATCHERS[value]
        names = {"max_iou": ("",), "ATSSMatcher": ("ATSSMatcher", "ATSSMatcherPreFix")}
        assert seph.RPN.MATCHER.NAME in names.get(value, (value,))
        matcher = model.proposal_generator.box_matcher
        assert (matcher is None) if cls is None else type(matcher).__name__ == cls
        for attr, expected in attrs.items():
            assert getattr(matcher, attr) == expected, attr
    elif key == "anchors":
        assert all(len(r) == value for r in m.ANCHOR_GENERATOR.ASPECT_RATIOS)
        assert set(model.proposal_generator.anchor_generator.num_anchors) == {value}
    elif key == "anchor_sizes":
        assert [s for (s,) in m.ANCHOR_GENERATOR.SIZES] == value
    elif key == "rpn_norm":
        head = model.proposal_generator.rpn_head
        assert _norms(head) == {value} and seph.RPN_HEAD.NORM == value
    elif key == "proposal_generator":
        assert m.PROPOSAL_GENERATOR.NAME == value
        assert type(model.proposal_generator).__name__ == value
    elif key == "backbone_hooks":
        names = [type(x).__name__ for x in model.backbone.modules()]
        assert [h for h in names if h.endswith("BackboneHook")] == value
    elif key == "cls_weighting":
        assert seph.PREDICTOR.CLS_LOSS_WEIGHTING == value
        assert _first(rh.box_predictor).cls_loss_weighting == value
    elif key == "reg_loss":
        kind, weight = value
        assert (m.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE, m.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT) == value
        predictor = _first(rh.box_predictor)
        assert predictor.box_reg_loss_type == kind
        assert predictor.loss_weight["loss_box_reg"] == weight
    elif key == "iou_version":
        assert seph.IOU_BRANCH.ENABLED and seph.IOU_BRANCH.VERSION == value
        assert _first(rh.box_predictor).iou_branch.version == value
    elif key == "pooler":
        assert seph.MULTISCALE_POOLER.ENABLED
        assert type(rh.box_pooler).__name__ == value
    elif key == "roi_iou_threshold":
        assert list(m.ROI_HEADS.IOU_THRESHOLDS) == [value]
        assert rh.proposal_matcher.thresholds[1] == value
    elif key == "roi_heads":
        cascade = value == "cascade"
        assert m.ROI_HEADS.NAME == ("SephCascadeROIHeads" if cascade else "SephStandardROIHeads")
        assert type(rh).__name__ == m.ROI_HEADS.NAME
        if cascade:
            assert len(rh.box_head) == len(rh.box_predictor) == 3
    else:
        raise AssertionError(f"unknown fact {key!r}")


def load_row(sephnet_cfg, config: str):
    cfg = sephnet_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "coco", config))
    cfg.MODEL.DEVICE = "meta"
    validate_sephnet_config(cfg)
    return cfg


def build_on_meta(cfg):
    with torch.device("meta"):
        return build_model(cfg)


def failed_facts(context, label, cfg, model) -> List[str]:
    failures = []
    for key, value in expected_facts(context, label).items():
        try:
            check_fact(key, value, cfg, model)
        except (AssertionError, AttributeError) as e:
            failures.append(f"{key}={value!r}: {e}")
    return failures


# ------------------------------------------------------------------------------ the tests


def test_every_config_of_the_log_index_is_bound_to_a_label():
    import yaml

    with open(os.path.join(REPO, "configs", "coco", "ablations.yaml")) as f:
        index = yaml.safe_load(f)
    indexed = {row["config"] for row in index["rows"] if "config" in row}
    assert indexed <= {config for _, _, config in ROWS}


def test_labels_read_into_terms_and_facts():
    assert split_terms("4) + cls loss weight + roi nr=512(sephv14)") == [
        "4)", "cls loss weight", "roi nr=512", "sephv14"
    ]
    facts = facts_of_label("4)+GIOUoutputs+reg loss x8 + low box reg threshold(sephv21)")
    assert facts["rpn_matcher"] == "ATSSMatcher3" and facts["sampler"] == "balanced"
    assert facts["reg_loss"] == ("giou", 8.0) and facts["cls_weighting"] == "square"
    assert facts_of_label("4)+GIOUoutputs+no cls loss weight")["cls_weighting"] == "none"
    with pytest.raises(AssertionError, match="no fact is known"):
        facts_of_label("4)+mystery component")


@pytest.mark.parametrize("context,label,config", ROWS, ids=[label for _, label, _ in ROWS])
def test_row_config_builds_what_its_label_names(context, label, config, sephnet_cfg):
    cfg = load_row(sephnet_cfg, config)
    model = build_on_meta(cfg)
    failures = failed_facts(context, label, cfg, model)
    assert not failures, f"{config} does not build {label!r}:\n" + "\n".join(failures)


@pytest.mark.parametrize(
    "config,label,keys",
    [
        # Swapped sampler switches: "no neg balance" would become "no pos balance".
        ("Mask-RCNN-FPN-sephv18.yaml", "4) + cls loss weight + no neg balance sample(sephv18)",
         [("MODEL.SEPH.SAMPLER.BALANCED_POS", False), ("MODEL.SEPH.SAMPLER.BALANCED_NEG", True)]),
        # The GIoU outputs' class-loss weighting dropped.
        ("Mask-RCNN-FPN-sephv15.yaml", "4)+GIOUoutputs+reg loss x4 (sephv15)",
         [("MODEL.SEPH.PREDICTOR.CLS_LOSS_WEIGHTING", "none")]),
        # Norm and head of neighbouring rows exchanged.
        ("Mask-RCNN-FPN-seph-BN.yaml", "seph+BN", [("MODEL.ROI_BOX_HEAD.NORM", "EvoNormS0")]),
        ("Mask-RCNN-FPN-sephv14_2.yaml", "5) + cls loss weight + roi nr=512 + 1 anchor(sephv14_2)",
         [("MODEL.SEPH.RPN.MATCHER.NAME", "ATSSMatcher3")]),
    ],
)
def test_a_config_that_switches_the_wrong_thing_fails(config, label, keys, sephnet_cfg):
    context = next(c for c, lab, conf in ROWS if lab == label and conf == config)
    cfg = load_row(sephnet_cfg, config)
    for key, value in keys:
        cfg.merge_from_list([key, value])
    failures = failed_facts(context, label, cfg, build_on_meta(cfg))
    assert failures
