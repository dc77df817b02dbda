"""Keys of the original's solver behaviour: ``MODEL.SEPH.SOLVER.*``.

Every default is detectron2's; the log-row configs set the original's values (the root
``configs/Base-Seph-RCNN-FPN.yaml``). What each computes: docs/components.md#solver.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config", "WEIGHT_DECAY_SCOPES", "OPTIMIZERS"]

_KEY = "MODEL.SEPH.SOLVER"
WEIGHT_DECAY_SCOPES = ("all", "backbone_convs")
OPTIMIZERS = ("SGD", "AdamW")


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.SOLVER.*`` with detectron2's behaviour as defaults."""
    cfg.MODEL.SEPH.SOLVER = CfgNode()
    node = cfg.MODEL.SEPH.SOLVER
    # Read by SOLVER.LR_SCHEDULER_NAME "WarmupCosineLR" only (as SOLVER.STEPS is by
    # "WarmupMultiStepLR"), so piecewise rows can inherit the log's cosine settings.
    # False: detectron2's cosine over the
    # whole run, scaled by the warm-up factor during warm-up. True: the original's, warm-up
    # alone for SOLVER.WARMUP_ITERS, then the cosine from the end of warm-up to MAX_ITER.
    node.COSINE_AFTER_WARMUP = False
    # SOLVER.LR_SCHEDULER_NAME "WarmupCosineLR" only: the learning rate the cosine ends at,
    # a number >= 0 and < SOLVER.BASE_LR (detectron2 v0.6: 0; the original: 1e-6).
    node.COSINE_END_LR = 0.0
    # With SOLVER.CLIP_GRADIENTS (ENABLED, CLIP_TYPE "norm"): False = detectron2's clipping
    # of each parameter's gradient norm to CLIP_VALUE; True = the original's clipping of the
    # global norm of all gradients together (one scale for every parameter).
    node.CLIP_GLOBAL_NORM = False
    # Which parameters SOLVER.WEIGHT_DECAY applies to: "all" = detectron2's (every
    # parameter, norms with WEIGHT_DECAY_NORM, biases with WEIGHT_DECAY_BIAS);
    # "backbone_convs" = the original's: only the conv weights of the bottom-up ResNet and
    # the FPN's 3x3 output convs (no decay on laterals, top block, hooks, RPN, ROI heads,
    # biases or norms).
    node.WEIGHT_DECAY_SCOPE = "all"
    # The optimizer: "SGD" = detectron2's (SOLVER.MOMENTUM, SOLVER.NESTEROV); "AdamW" =
    # torch.optim.AdamW with betas (0.9, 0.999) and SOLVER.WEIGHT_DECAY as its decoupled
    # decay (DETR's optimizer; SOLVER.MOMENTUM is not used, NESTEROV must be False). Both
    # take SOLVER.BASE_LR, the bias/norm factors and SOLVER.CLIP_GRADIENTS.
    node.OPTIMIZER = "SGD"
    # Multiplier of the learning rate of the parameters under the model's ``backbone``
    # (DETR: 0.1 for a pretrained ResNet), a number > 0; 1.0 = one rate for all.
    node.BACKBONE_LR_FACTOR = 1.0


def validate_config(cfg: CfgNode) -> None:
    """Check the solver keys against the detectron2 keys they modify.

    Raises:
        ValueError: global-norm clipping without SOLVER.CLIP_GRADIENTS (it would be ignored),
            or a value out of range, naming the keys.
    """
    node, solver = cfg.MODEL.SEPH.SOLVER, cfg.SOLVER
    for key in ("COSINE_AFTER_WARMUP", "CLIP_GLOBAL_NORM"):
        if not isinstance(node[key], bool):
            raise ValueError(f"{_KEY}.{key}={node[key]!r}; expected True or False.")
    end = node.COSINE_END_LR
    if isinstance(end, bool) or not isinstance(end, (int, float)) or not 0 <= end < solver.BASE_LR:
        raise ValueError(
            f"{_KEY}.COSINE_END_LR={end!r}; expected a number >= 0 and < SOLVER.BASE_LR="
            f"{solver.BASE_LR}."
        )
    clip = solver.CLIP_GRADIENTS
    if node.CLIP_GLOBAL_NORM and not (clip.ENABLED and clip.CLIP_TYPE == "norm"):
        raise ValueError(
            f"{_KEY}.CLIP_GLOBAL_NORM=True needs SOLVER.CLIP_GRADIENTS.ENABLED=True and "
            f"CLIP_TYPE='norm'; got ENABLED={clip.ENABLED}, CLIP_TYPE={clip.CLIP_TYPE!r}."
        )
    if node.WEIGHT_DECAY_SCOPE not in WEIGHT_DECAY_SCOPES:
        raise ValueError(
            f"{_KEY}.WEIGHT_DECAY_SCOPE={node.WEIGHT_DECAY_SCOPE!r}; expected one of "
            f"{', '.join(repr(s) for s in WEIGHT_DECAY_SCOPES)}."
        )
    if node.OPTIMIZER not in OPTIMIZERS:
        raise ValueError(
            f"{_KEY}.OPTIMIZER={node.OPTIMIZER!r}; expected one of {', '.join(map(repr, OPTIMIZERS))}."
        )
    if node.OPTIMIZER == "AdamW" and solver.NESTEROV:
        raise ValueError(f"SOLVER.NESTEROV=True is SGD's; {_KEY}.OPTIMIZER='AdamW' would ignore it.")
    factor = node.BACKBONE_LR_FACTOR
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
        raise ValueError(f"{_KEY}.BACKBONE_LR_FACTOR={factor!r}; expected a number > 0.")
