"""Keys of ``SephRPN``: ``MODEL.SEPH.RPN.MATCHER.*`` (docs/components.md#anchors-and-rpn),
``MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED`` (docs/components.md#conventions) and
``MODEL.SEPH.RPN.TEST_NMS.*`` (soft-NMS of the test-time proposals, docs/test_time.md).

The matchers' (lo, hi) IoU thresholds reuse ``MODEL.RPN.IOU_THRESHOLDS``; the log's configs
set it to [0.4, 0.5] (detectron2's default is [0.3, 0.7]).
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.RPN.MATCHER"
_TEST_NMS_KEY = "MODEL.SEPH.RPN.TEST_NMS"
TEST_NMS_METHODS = ("nms", "soft_linear", "soft_gaussian")


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.RPN.*`` with defaults (detectron2's RPN matching and sampling)."""
    cfg.MODEL.SEPH.RPN = CfgNode()
    cfg.MODEL.SEPH.RPN.MATCHER = CfgNode()
    # Which matcher labels RPN anchors; needs MODEL.PROPOSAL_GENERATOR.NAME "SephRPN".
    # "" = detectron2's IoU Matcher (MODEL.RPN.IOU_THRESHOLDS / IOU_LABELS, low-quality
    # matches allowed): the log's "Matcher" rows (recipe 9, sephv14_29) and all pre-ATSS rows.
    # "ATSSMatcher": nearest-centre candidates per level, t = min(mean+std, best candidate)
    #   (fixed version; recipe 7, sephv14_9, sephv14_10 and configs derived from them).
    # "ATSSMatcherPreFix": ATSSMatcher as before the 2020-10-28 fix (recipe "3)", sephv3-5).
    # "ATSSMatcher3": t = min(mean+std over all anchors with IoU > MIN_IOU, hi) plus an
    #   ignore band of width hi - lo below t (recipe 4, sephv11..sephv14, most sephv14_*).
    # "ATSSMatcher4": ATSSMatcher3 without the ignore band (recipe 5, sephv14_2, sephNv15).
    # "DynamicMatcher": ATSSMatcher4 with statistics weighted n_0/n_l per level (recipe 8,
    #   sephv14_11). (lo, hi) come from MODEL.RPN.IOU_THRESHOLDS (log configs: [0.4, 0.5]).
    # Distances and boxes are in absolute input pixels (the original normalised them by the
    # padded image size; this changes candidate order only for non-square images).
    cfg.MODEL.SEPH.RPN.MATCHER.NAME = ""
    # IoU floor (0 <= value < 1) of every ATSS-style matcher: anchors at or below it never
    # become positive, and only anchors above it (ATSSMatcher: at or above it) enter the
    # mean/std statistics. 0.1 in every log row.
    cfg.MODEL.SEPH.RPN.MATCHER.MIN_IOU = 0.1
    # ATSSMatcher / ATSSMatcherPreFix: distance candidates per level and gt, in units of
    # anchors per location (A = len(ANCHOR_GENERATOR.SIZES[0]) * len(ASPECT_RATIOS[0])):
    # k = TOPK_PER_CELL_ANCHOR * A (log: 9, i.e. k = 27 with 3 ratios, 9 with 1). A level with
    # fewer than k anchors contributes all of them (sizes depend on the input, so this cannot
    # be checked at setup). Positive int.
    cfg.MODEL.SEPH.RPN.MATCHER.TOPK_PER_CELL_ANCHOR = 9

    cfg.MODEL.SEPH.RPN.BATCH_SAMPLING = CfgNode()
    # True: sample MODEL.RPN.BATCH_SIZE_PER_IMAGE anchors (POSITIVE_FRACTION positives at most)
    # in total over all images of the batch, as the original did in every log row; losses keep
    # detectron2's normaliser (images x BATCH_SIZE_PER_IMAGE), so they are ~1/images of
    # detectron2's, again as the original. False (default, docs/components.md#conventions):
    # detectron2's per-image sampling. Needs MODEL.PROPOSAL_GENERATOR.NAME "SephRPN".
    cfg.MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED = False

    cfg.MODEL.SEPH.RPN.TEST_NMS = CfgNode()
    # How test-time proposals are suppressed within each level (training always uses NMS):
    # "nms" = detectron2's NMS at MODEL.RPN.NMS_THRESH; "soft_linear" / "soft_gaussian" =
    # soft-NMS of the objectness probabilities (linear: decays scores of boxes with IoU above
    # MODEL.RPN.NMS_THRESH by 1 - IoU; gaussian: by exp(-IoU^2 / SOFT_SIGMA)), then the
    # MODEL.RPN.POST_NMS_TOPK_TEST best by decayed score. Needs PROPOSAL_GENERATOR "SephRPN".
    cfg.MODEL.SEPH.RPN.TEST_NMS.METHOD = "nms"
    # Gaussian soft-NMS width (> 0).
    cfg.MODEL.SEPH.RPN.TEST_NMS.SOFT_SIGMA = 0.5
    # Soft-NMS drops proposals whose decayed objectness probability falls below this ([0, 1)).
    cfg.MODEL.SEPH.RPN.TEST_NMS.SOFT_SCORE_THRESH = 0.001


def validate_config(cfg: CfgNode) -> None:
    """Check the ``MODEL.SEPH.RPN`` keys.

    Validated: MATCHER.NAME is registered (the error lists the registered names); a
    non-empty MATCHER.NAME or BATCH_SAMPLING.ENABLED comes with
    ``MODEL.PROPOSAL_GENERATOR.NAME == "SephRPN"``; MIN_IOU is in [0, 1);
    TOPK_PER_CELL_ANCHOR is a positive int; TEST_NMS.METHOD is known, SOFT_SIGMA > 0,
    SOFT_SCORE_THRESH in [0, 1), and soft-NMS comes with SephRPN; and the named matcher
    builds from the config (e.g. ``MODEL.RPN.IOU_THRESHOLDS`` must be two sorted values in [0, 1] for the
    threshold-capped matchers). Not validated: whether k exceeds the anchors of the coarsest
    level, which depends on the input size (the matcher then takes the whole level).

    Raises:
        ValueError: naming the offending keys and values.
    """
    node = cfg.MODEL.SEPH.RPN.MATCHER
    if not isinstance(node.MIN_IOU, (int, float)) or not 0.0 <= node.MIN_IOU < 1.0:
        raise ValueError(f"{_KEY}.MIN_IOU={node.MIN_IOU!r}; expected a number in [0, 1).")
    topk = node.TOPK_PER_CELL_ANCHOR
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"{_KEY}.TOPK_PER_CELL_ANCHOR={topk!r}; expected a positive int.")
    generator = cfg.MODEL.PROPOSAL_GENERATOR.NAME
    _validate_test_nms(cfg.MODEL.SEPH.RPN.TEST_NMS, generator)
    if cfg.MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED and generator != "SephRPN":
        raise ValueError(
            "MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED=True needs MODEL.PROPOSAL_GENERATOR.NAME="
            f"'SephRPN', got {generator!r}."
        )
    if not node.NAME:
        return
    if generator != "SephRPN":
        raise ValueError(
            f"{_KEY}.NAME={node.NAME!r} needs MODEL.PROPOSAL_GENERATOR.NAME='SephRPN', got "
            f"{generator!r} (only SephRPN uses the sephnet anchor matchers)."
        )
    # Imported here: registration lives in modeling, which the config package must not
    # import at module level.
    from sephnet.modeling.matchers import build_anchor_matcher

    anchors = cfg.MODEL.ANCHOR_GENERATOR
    num_cell_anchors = len(anchors.SIZES[0]) * len(anchors.ASPECT_RATIOS[0])
    build_anchor_matcher(cfg, num_cell_anchors)


def _validate_test_nms(node: CfgNode, generator: str) -> None:
    """``MODEL.SEPH.RPN.TEST_NMS``: known method, sigma > 0, threshold in [0, 1), SephRPN."""
    if node.METHOD not in TEST_NMS_METHODS:
        raise ValueError(f"{_TEST_NMS_KEY}.METHOD={node.METHOD!r}; expected one of "
                         f"{TEST_NMS_METHODS}.")
    if not node.SOFT_SIGMA > 0:
        raise ValueError(f"{_TEST_NMS_KEY}.SOFT_SIGMA={node.SOFT_SIGMA!r}; expected a number > 0.")
    if not 0.0 <= node.SOFT_SCORE_THRESH < 1.0:
        raise ValueError(f"{_TEST_NMS_KEY}.SOFT_SCORE_THRESH={node.SOFT_SCORE_THRESH!r}; "
                         "expected a number in [0, 1).")
    if node.METHOD != "nms" and generator != "SephRPN":
        raise ValueError(f"{_TEST_NMS_KEY}.METHOD={node.METHOD!r} needs "
                         f"MODEL.PROPOSAL_GENERATOR.NAME='SephRPN', got {generator!r}.")
