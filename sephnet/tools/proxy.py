"""The proxy scale of the experiment log: one set of config overrides that shrinks any log row
to a CPU-sized run on the clutter dataset (:mod:`sephnet.data.clutter`).

The overrides are the same for every row; only the anchor sizes follow a rule instead of a
value (the row's own sizes times :data:`ANCHOR_SCALE`), because rows differ in pyramid levels
and anchors. Everything a row changes relative to its parents (heads, predictors, norms,
samplers, matchers, losses, ROI counts, LR schedule type, pooled levels) is kept.

What the proxy does to a row, and why:

- data: ``clutter_train`` / ``clutter_val`` (8 classes), 160-224 px images used at their
  own size (the log trains and tests at ~576 px, so anchors are scaled by 1/4), masks as
  bitmaps (the dataset stores RLE);
- model: ResNet-18 with GroupNorm (FrozenBN needs ImageNet statistics, and no weights can be
  downloaded), 64-channel FPN and head convs, 256-wide head FCs, at most 1000 / 500 / 300 RPN
  boxes (pre-NMS per level / post-NMS train / test);
- pretraining: the log's rows start from an ImageNet ResNet. The proxy's stand-in is one backbone pretraining run per study
  (:func:`pretrain_opts`: the quickstart Mask R-CNN trained from scratch on ``clutter_train``),
  whose ResNet weights (:func:`extract_backbone`) every row then starts from, keeping its own
  ``MODEL.BACKBONE.FREEZE_AT``; without it (``weights=""``) rows train from scratch with
  nothing frozen;
- schedule: 4 images per iteration on one process, lr 0.02, ``iterations`` steps with
  warmup over the first tenth and the piecewise rows' LR steps at 2/3 and 5/6 of the run
  (where the log's 80k and 100k of 120k fall); the row's scheduler type (cosine or
  piecewise) is kept; one evaluation at the end;
- seed: ``SEED`` = the run's seed.

Rows that are not R-CNNs (the optional detector rows of the index) get one more override
from :func:`row_model_opts`: the dense detectors (RetinaNet, FCOS, ATSS) read their class
count from ``MODEL.RETINANET.NUM_CLASSES``. Rows that change the ResNet trunk itself
(DetNet-59, deformable convs) cannot be shrunk to the proxy's ResNet-18, and rows trained
with AdamW (DETR) do not fit its SGD learning rate: they are refused.
"""
from typing import List, Optional, Sequence

__all__ = ["ANCHOR_SCALE", "BACKBONE_WEIGHTS", "DENSE_META_ARCHITECTURES", "PRETRAIN_SEED",
           "PROXY_DATASETS", "PROXY_NUM_CLASSES", "extract_backbone", "pretrain_opts",
           "proxy_opts", "row_anchor_sizes", "row_model_opts", "scaled_anchor_sizes"]

#: Proxy image size / the log's (160 / ~600 px): the factor applied to each row's anchors.
ANCHOR_SCALE = 0.25

#: (train, test) datasets of the proxy.
PROXY_DATASETS = ("clutter_train", "clutter_val")

#: SEED of the pretraining run: one backbone for every row and seed, as the log has one
#: ImageNet model.
PRETRAIN_SEED = 1000

#: File in the pretraining run's folder holding its ResNet weights (``backbone.bottom_up.*``).
BACKBONE_WEIGHTS = "backbone.pth"

_TRUNK_PREFIX = "backbone.bottom_up."

#: Classes of the proxy's data: len(sephnet.data.clutter.CLUTTER_CLASSES), kept import-free
#: for the CLI.
PROXY_NUM_CLASSES = 8

#: Meta-architectures whose class count is ``MODEL.RETINANET.NUM_CLASSES`` (dense detectors).
DENSE_META_ARCHITECTURES = ("RetinaNet", "SephFCOS", "SephATSS")

#: Backbones built on their own ResNet-50-like trunk, which a CPU-scale ResNet-18 cannot replace.
_OWN_TRUNK_BACKBONES = ("build_seph_detnet_backbone", "build_seph_detnet_fpn_backbone")


def proxy_opts(iterations: int, seed: int, anchor_sizes: Optional[Sequence[Sequence[float]]] = None,
               weights: str = "") -> List[str]:
    """The proxy's KEY VALUE config overrides (see the module docstring).

    Args:
        iterations: SGD steps (>= 10).
        seed: the run's ``SEED``.
        anchor_sizes: ``MODEL.ANCHOR_GENERATOR.SIZES`` to set (already scaled; see
            :func:`scaled_anchor_sizes`), or None to keep the config's own (for configs
            already at the proxy's scale, e.g. the quickstart).
        weights: ``MODEL.WEIGHTS``: the pretrained backbone (:data:`BACKBONE_WEIGHTS`), the
            config's ``MODEL.BACKBONE.FREEZE_AT`` kept; or "" to train from scratch with
            ``FREEZE_AT`` 0.

    Raises:
        ValueError: ``iterations`` < 10.
    """
    if iterations < 10:
        raise ValueError(f"--proxy-iters={iterations}; expected at least 10.")
    opts = [
        "MODEL.DEVICE", "cpu",
        "MODEL.WEIGHTS", weights,
        *([] if weights else ["MODEL.BACKBONE.FREEZE_AT", "0"]),
        "MODEL.PIXEL_STD", "[57.375, 57.120, 58.395]",
        "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.RESNETS.NORM", "GN",
        "MODEL.FPN.OUT_CHANNELS", "64",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "1000",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "1000",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "500",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "300",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(PROXY_NUM_CLASSES),
        "MODEL.ROI_BOX_HEAD.CONV_DIM", "64",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "256",
        "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
        "MODEL.SEPH.BOX_HEAD.CONV_DIM", "64",
        "MODEL.SEPH.BOX_HEAD.FC_DIM", "256",
        "MODEL.SEPH.BOX_HEAD.BRANCH_CONV_DIM", "64",
        "DATASETS.TRAIN", f"('{PROXY_DATASETS[0]}',)",
        "DATASETS.TEST", f"('{PROXY_DATASETS[1]}',)",
        "DATALOADER.NUM_WORKERS", "0",
        "INPUT.MASK_FORMAT", "bitmask",
        "INPUT.MIN_SIZE_TRAIN", "(160,)",
        "INPUT.MAX_SIZE_TRAIN", "224",
        "INPUT.MIN_SIZE_TEST", "160",
        "INPUT.MAX_SIZE_TEST", "224",
        "SOLVER.IMS_PER_BATCH", "4",
        "SOLVER.REFERENCE_WORLD_SIZE", "0",
        "SOLVER.BASE_LR", "0.02",
        "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.WARMUP_ITERS", str(iterations // 10),
        "SOLVER.STEPS", f"({iterations * 2 // 3}, {iterations * 5 // 6})",
        "SOLVER.CHECKPOINT_PERIOD", str(iterations // 2),
        "TEST.EVAL_PERIOD", "0",
        "SEED", str(seed),
    ]
    if anchor_sizes is not None:
        opts += ["MODEL.ANCHOR_GENERATOR.SIZES", repr([list(map(float, s)) for s in anchor_sizes])]
    return opts


def pretrain_opts(iterations: int) -> List[str]:
    """Overrides of the backbone pretraining run: :func:`proxy_opts` from scratch with
    :data:`PRETRAIN_SEED`, for a config already at the proxy's scale (the quickstart's), so
    its own anchors are kept.

    Raises:
        ValueError: ``iterations`` < 10.
    """
    return proxy_opts(iterations, PRETRAIN_SEED)


def extract_backbone(checkpoint: str, out: str) -> int:
    """Write the ResNet weights (keys ``backbone.bottom_up.*``) of a detectron2 checkpoint to
    ``out`` as ``{"model": state dict}`` (atomically), for ``MODEL.WEIGHTS``: the FPN and
    heads are left out, so every row builds its own. Returns the number of tensors written.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: it holds no ``backbone.bottom_up.*`` tensor.
    """
    import os

    import torch

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint (did the pretraining finish?)")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = state.get("model", state) if isinstance(state, dict) else {}
    trunk = {k: v for k, v in model.items() if k.startswith(_TRUNK_PREFIX)}
    if not trunk:
        raise ValueError(f"{checkpoint}: no '{_TRUNK_PREFIX}*' weights in its model.")
    tmp = f"{out}.tmp{os.getpid()}"
    torch.save({"model": trunk}, tmp)
    os.replace(tmp, out)
    return len(trunk)


def scaled_anchor_sizes(sizes: Sequence[Sequence[float]], scale: float = ANCHOR_SCALE
                        ) -> List[List[float]]:
    """``sizes`` (``MODEL.ANCHOR_GENERATOR.SIZES``) times ``scale``, rounded to 0.1 px."""
    return [[round(float(s) * scale, 1) for s in level] for level in sizes]


def row_anchor_sizes(config_file: str) -> List[List[float]]:
    """``MODEL.ANCHOR_GENERATOR.SIZES`` of a row's config (merged with its bases)."""
    from sephnet.backend import get_cfg
    from sephnet.config import add_sephnet_config

    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file(config_file)
    return [list(level) for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES]


def row_model_opts(config_file: str, num_classes: int) -> List[str]:
    """The overrides a row's meta-architecture needs on top of a CPU-scale run's common ones
    (:func:`proxy_opts`, or ``shapes_smoke_opts`` of :mod:`sephnet.tools.ablate`), which set
    ``MODEL.ROI_HEADS.NUM_CLASSES``: ``MODEL.RETINANET.NUM_CLASSES`` = ``num_classes`` for a
    dense detector, nothing for an R-CNN row.

    Raises:
        ValueError: the row is an SSD (its priors and input size are its own); it changes the
            ResNet trunk (a DetNet backbone, or deformable convs, which need bottleneck blocks),
            so a CPU-scale run's ResNet-18 cannot stand in for it; or it trains with another
            optimizer than SGD (DETR's AdamW), for which a CPU-scale run's SGD learning rate
            is wrong.
    """
    from sephnet.backend import get_cfg
    from sephnet.config import add_sephnet_config

    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file(config_file)
    if cfg.MODEL.META_ARCHITECTURE == "SephSSD":
        raise ValueError(f"{config_file}: MODEL.META_ARCHITECTURE=SephSSD sizes its priors "
                         "(MODEL.SEPH.SSD) and square input for its own base network, which a "
                         "CPU-scale run does not scale; run it at full scale.")
    if cfg.MODEL.BACKBONE.NAME in _OWN_TRUNK_BACKBONES:
        raise ValueError(f"{config_file}: MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME} has its "
                         "own trunk, which a CPU-scale run's ResNet-18 cannot replace; run it "
                         "at full scale.")
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        raise ValueError(f"{config_file}: MODEL.RESNETS.DEFORM_ON_PER_STAGE needs bottleneck "
                         "blocks, which a CPU-scale run's ResNet-18 has none of; run it at "
                         "full scale.")
    if cfg.MODEL.SEPH.SOLVER.OPTIMIZER != "SGD":
        raise ValueError(f"{config_file}: MODEL.SEPH.SOLVER.OPTIMIZER="
                         f"{cfg.MODEL.SEPH.SOLVER.OPTIMIZER}; a CPU-scale run's learning rate is "
                         "an SGD rate; run it at full scale.")
    if cfg.MODEL.META_ARCHITECTURE in DENSE_META_ARCHITECTURES:
        return ["MODEL.RETINANET.NUM_CLASSES", str(num_classes)]
    return []
