"""Loading weights whose names differ from the model's: Caffe2/Detectron blob names, ImageNet
backbones, torchvision ResNets.

Two steps, both as in detectron2 v0.6:

1. (Caffe2 only) rename blobs to detectron2 names (:func:`convert_c2_detectron_names`), e.g.
   ``res2_0_branch2a_bn_s`` -> ``res2.0.conv1.norm.weight``, ``fpn_inner_res3_3_sum_lateral_w``
   -> ``fpn_lateral3.weight``, ``conv_rpn_fpn2_w`` -> ``proposal_generator.rpn_head.conv.weight``,
   and move the background class of the box/mask predictors to where detectron2 keeps it.
2. match each model key to the longest checkpoint key that is a whole-component suffix of it
   (:func:`align_and_update_state_dicts`), so ``backbone.bottom_up.res2.0.conv1.weight`` takes
   ``res2.0.conv1.weight``.
"""
import logging
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from tabulate import tabulate

logger = logging.getLogger(__name__)

# One rule is (pattern, replacement), applied with re.sub to every name, in list order. The
# order is significant (later rules see the output of earlier ones).
_Rule = Tuple[str, str]


def _literal(old: str, new: str) -> _Rule:
    """A rule replacing every occurrence of the plain string ``old``."""
    return re.escape(old), new.replace("\\", "\\\\")


# Caffe2 "_"-separated names become "."-separated, then suffixes and block names are mapped.
_BASIC_RULES: List[_Rule] = [
    _literal("_", "."),
    (r"\.b$", ".bias"),
    (r"\.w$", ".weight"),
    # BN and GN parameters all live in a sub-module called "norm"
    (r"bn\.s$", "norm.weight"),
    (r"bn\.bias$", "norm.bias"),
    (r"bn\.rm", "norm.running_mean"),
    (r"bn\.running\.mean$", "norm.running_mean"),
    (r"bn\.riv$", "norm.running_var"),
    (r"bn\.running\.var$", "norm.running_var"),
    (r"bn\.gamma$", "norm.weight"),
    (r"bn\.beta$", "norm.bias"),
    (r"gn\.s$", "norm.weight"),
    (r"gn\.bias$", "norm.bias"),
    # the stem: "res_conv1_bn" is the norm of "conv1"; "stem." keeps conv1 from matching the
    # conv1 of every residual block
    (r"^res\.conv1\.norm\.", "conv1.norm."),
    (r"^conv1\.", "stem.conv1."),
    # residual blocks (stages keep the Caffe2 names res2..res5)
    _literal(".branch1.", ".shortcut."),
    _literal(".branch2a.", ".conv1."),
    _literal(".branch2b.", ".conv2."),
    _literal(".branch2c.", ".conv3."),
    # DensePose heads
    (r"^body.conv.fcn", "body_conv_fcn"),
    _literal("AnnIndex.lowres", "ann_index_lowres"),
    _literal("Index.UV.lowres", "index_uv_lowres"),
    _literal("U.lowres", "u_lowres"),
    _literal("V.lowres", "v_lowres"),
]

# Whole-name renames applied before the rules (classification layer of ImageNet models).
_BASIC_EXACT = {"pred_b": "linear_b", "pred_w": "linear_w"}

# Detection heads, applied after the basic rules and before the FPN renaming.
_HEAD_RULES: List[_Rule] = [
    # RPN: with FPN, Caffe2 defines the head on level 2 ("fpn2") and shares it across levels
    _literal("conv.rpn.fpn2", "proposal_generator.rpn_head.conv"),
    _literal("conv.rpn", "proposal_generator.rpn_head.conv"),
    _literal("rpn.bbox.pred.fpn2", "proposal_generator.rpn_head.anchor_deltas"),
    _literal("rpn.cls.logits.fpn2", "proposal_generator.rpn_head.objectness_logits"),
    _literal("rpn.bbox.pred", "proposal_generator.rpn_head.anchor_deltas"),
    _literal("rpn.cls.logits", "proposal_generator.rpn_head.objectness_logits"),
    # Fast R-CNN box head and predictor
    (r"^bbox\.pred", "bbox_pred"),
    (r"^cls\.score", "cls_score"),
    (r"^fc6\.", "box_head.fc1."),
    (r"^fc7\.", "box_head.fc2."),
    (r"^head\.conv", "box_head.conv"),  # 4conv1fc heads: head_conv1_w, head_conv1_gn_s
]

# Mask and keypoint heads, applied after the FPN renaming.
_MASK_KEYPOINT_RULES: List[_Rule] = [
    _literal(".[mask].fcn", "mask_head.mask_fcn"),  # StandardROIHeads
    (r"^\.mask\.fcn", "mask_head.mask_fcn"),
    _literal("mask.fcn.logits", "mask_head.predictor"),
    _literal("conv5.mask", "mask_head.deconv"),  # Res5ROIHeads
    _literal("conv.fcn", "roi_heads.keypoint_head.conv_fcn"),
    _literal("kps.score.lowres", "roi_heads.keypoint_head.score_lowres"),
    _literal("kps.score.", "roi_heads.keypoint_head.score."),
]


def _apply_rules(names: Sequence[str], rules: Sequence[_Rule]) -> List[str]:
    """Apply every rule, in order, to every name."""
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out = []
    for name in names:
        for pattern, repl in compiled:
            name = pattern.sub(repl, name)
        out.append(name)
    return out


def convert_basic_c2_names(original_keys: Sequence[str]) -> List[str]:
    """Rename Caffe2 backbone blob names to detectron2 parameter names.

    Covers what ImageNet classification models contain: the stem, residual blocks, BN/GN
    parameters (``conv1_w`` -> ``stem.conv1.weight``, ``res_conv1_bn_s`` ->
    ``stem.conv1.norm.weight``, ``res3_1_branch2b_bn_riv`` -> ``res3.1.conv2.norm.running_var``).

    Args:
        original_keys: Caffe2 blob names.

    Returns:
        The renamed keys, in the same order (the input is not modified).
    """
    keys = [_BASIC_EXACT.get(k, k) for k in original_keys]
    return _apply_rules(keys, _BASIC_RULES)


def _rename_fpn(name: str) -> str:
    """``fpn.inner.resX...<param>`` -> ``fpn_lateralX[.norm].<param>`` and
    ``fpn.resX...<param>`` -> ``fpn_outputX[.norm].<param>``; other names unchanged."""
    parts = name.split(".")
    norm = ".norm" if "norm" in parts else ""
    if name.startswith("fpn.inner."):
        return f"fpn_lateral{int(parts[2][3:])}{norm}.{parts[-1]}"
    if name.startswith("fpn.res"):
        return f"fpn_output{int(parts[1][3:])}{norm}.{parts[-1]}"
    return name


def convert_c2_detectron_names(
    weights: Mapping[str, torch.Tensor]
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Rename Caffe2 Detectron weights to detectron2 names and fix predictor layouts.

    Besides renaming (backbone, FPN, RPN, box head, mask head, keypoint head), Caffe2's
    predictors put the background class first while detectron2 does not predict boxes/masks
    for it and puts its score last, so:

    - ``bbox_pred.*``: the first 4 rows (background deltas) are dropped;
    - ``mask_head.predictor.*``: the first row (background mask) is dropped;
    - ``cls_score.*``: row 0 moves to the end.

    Args:
        weights: Caffe2 blob name -> tensor.

    Returns:
        (new_weights, new_to_original): detectron2 name -> tensor, and detectron2 name ->
        Caffe2 name.

    Raises:
        ValueError: if two blobs map to the same detectron2 name.
    """
    logger.info("Renaming Caffe2 weights ......")
    original = sorted(weights.keys())
    renamed = convert_basic_c2_names(original)
    renamed = _apply_rules(renamed, _HEAD_RULES)
    renamed = [_rename_fpn(k) for k in renamed]
    renamed = _apply_rules(renamed, _MASK_KEYPOINT_RULES)
    if len(set(renamed)) != len(renamed):
        seen: Dict[str, str] = {}
        for orig, new in zip(original, renamed):
            if new in seen:
                raise ValueError(
                    f"Caffe2 blobs '{seen[new]}' and '{orig}' both map to detectron2 name '{new}'"
                )
            seen[new] = orig

    new_weights: Dict[str, torch.Tensor] = {}
    new_to_original: Dict[str, str] = {}
    for orig, new in zip(original, renamed):
        value = weights[orig]
        new_to_original[new] = orig
        if new.startswith("bbox_pred.") or new.startswith("mask_head.predictor."):
            skip = 4 if new.startswith("bbox_pred.") else 1
            new_weights[new] = value[skip:]
            logger.info(
                f"Remove prediction weight for background class in {new}. The shape changes "
                f"from {tuple(value.shape)} to {tuple(new_weights[new].shape)}."
            )
        elif new.startswith("cls_score."):
            logger.info(
                f"Move classification weights for background class in {new} from index 0 to "
                f"index {value.shape[0] - 1}."
            )
            new_weights[new] = torch.cat([value[1:], value[:1]])
        else:
            new_weights[new] = value
    return new_weights, new_to_original


def convert_torchvision_resnet_names(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict the way detectron2's
    ``tools/convert-torchvision-to-d2.py`` does.

    ``conv1.weight`` -> ``stem.conv1.weight``, ``bn1.*`` -> ``stem.conv1.norm.*``,
    ``layerN.i.convK.weight`` -> ``res{N+1}.i.convK.weight``, ``layerN.i.bnK.*`` ->
    ``res{N+1}.i.convK.norm.*``, ``downsample.0/1`` -> ``shortcut`` / ``shortcut.norm``; every
    other top-level key (``fc.*``) gets the ``stem.`` prefix too, as the tool does. Save the
    result as ``{"model": ..., "__author__": "torchvision", "matching_heuristics": True}`` in a
    ``.pkl`` and use ``MODEL.RESNETS.STRIDE_IN_1X1=False``, RGB input and torchvision's pixel
    mean/std.

    Args:
        state_dict: torchvision key -> tensor.

    Returns:
        A new dict: detectron2-style key -> the same tensor.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key if "layer" in key else "stem." + key
        for t in (1, 2, 3, 4):
            new = new.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            new = new.replace(f"bn{t}", f"conv{t}.norm")
        new = new.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        out[new] = value
    return out


def _is_component_suffix(model_key: str, ckpt_key: str) -> bool:
    """True if ``ckpt_key`` equals ``model_key`` or is a suffix starting after a ``.`` (so
    ``mesh_head.whatever_conv1`` does not match ``conv1``)."""
    return model_key == ckpt_key or model_key.endswith("." + ckpt_key)


def _longest_matching_ckpt_key(model_key: str, ckpt_keys: set) -> Optional[str]:
    """The longest checkpoint key that is a component suffix of ``model_key``, or None."""
    if model_key in ckpt_keys:
        return model_key
    # candidates ordered from longest to shortest: the text after each ".", left to right
    for pos, char in enumerate(model_key):
        if char == "." and model_key[pos + 1 :] in ckpt_keys:
            return model_key[pos + 1 :]
    return None


def align_and_update_state_dicts(
    model_state_dict: Mapping[str, torch.Tensor],
    ckpt_state_dict: Mapping[str, torch.Tensor],
    c2_conversion: bool = True,
) -> Dict[str, torch.Tensor]:
    """Rename checkpoint keys to the model keys they most plausibly belong to.

    Pretrained weights usually lack the prefixes a detector adds (``res2.0.conv1.weight`` vs
    ``backbone.bottom_up.res2.0.conv1.weight``). Each model key takes the longest checkpoint key
    equal to it or ending it after a ``.``; a checkpoint key whose value has a different shape
    from the model's is logged and left under its own name (so the loader reports it). Matches
    are logged as a table. Note: the matching is not symmetric; model keys are assumed to be the
    longer ones.

    Args:
        model_state_dict: the model's ``state_dict()`` (only keys and shapes are used).
        ckpt_state_dict: checkpoint name -> tensor.
        c2_conversion: first rename Caffe2 blob names (:func:`convert_c2_detectron_names`).

    Returns:
        A state dict keyed by model names for the matched tensors, plus every unmatched
        checkpoint tensor under its (possibly Caffe2-converted) name. If nothing matches, the
        (converted) checkpoint dict itself.

    Raises:
        ValueError: if one checkpoint key would be loaded into two model keys.
    """
    model_keys = sorted(model_state_dict.keys())
    if c2_conversion:
        ckpt_state_dict, original_keys = convert_c2_detectron_names(ckpt_state_dict)
    else:
        original_keys = {k: k for k in ckpt_state_dict.keys()}
    ckpt_key_set = set(ckpt_state_dict.keys())

    result: Dict[str, torch.Tensor] = {}
    ckpt_to_model: Dict[str, str] = {}
    for key_model in model_keys:
        key_ckpt = _longest_matching_ckpt_key(key_model, ckpt_key_set)
        if key_ckpt is None:
            continue
        value = ckpt_state_dict[key_ckpt]
        shape_in_model = model_state_dict[key_model].shape
        if shape_in_model != value.shape:
            logger.warning(
                f"Shape of {key_ckpt} in checkpoint is {value.shape}, while shape of {key_model} "
                f"in model is {shape_in_model}."
            )
            logger.warning(
                f"{key_ckpt} will not be loaded. Please double check and see if this is desired."
            )
            continue
        if key_ckpt in ckpt_to_model:
            logger.error(
                f"Ambiguity found for {key_ckpt} in checkpoint! It matches at least two keys in "
                f"the model ({key_model} and {ckpt_to_model[key_ckpt]})."
            )
            raise ValueError(
                f"Cannot match one checkpoint key to multiple keys in the model: '{key_ckpt}' "
                f"matches '{ckpt_to_model[key_ckpt]}' and '{key_model}'."
            )
        result[key_model] = value
        ckpt_to_model[key_ckpt] = key_model

    if not ckpt_to_model:
        logger.warning("No checkpoint weight matched any model parameter.")
        return dict(ckpt_state_dict)

    model_to_original = {m: original_keys[c] for c, m in ckpt_to_model.items()}
    _log_matches(model_state_dict, model_to_original)

    for key_ckpt in sorted(ckpt_key_set):
        if key_ckpt not in ckpt_to_model:
            result[key_ckpt] = ckpt_state_dict[key_ckpt]
    return result


# ---------------------------------------------------------------- the log table of matches


def _common_name_prefix(names: Sequence[str]) -> str:
    """Longest shared prefix of whole ``.``-components, with a trailing ``.`` ("" if none),
    never swallowing the last component of a name (so one name gives its module prefix).

    ``["abc.zfg", "abc.zef"]`` -> ``"abc."``; ``["a.b.weight"]`` -> ``"a.b."``.
    """
    split = [n.split(".") for n in names]
    shortest = min(len(parts) for parts in split)
    shared: List[str] = []
    for parts in zip(*(p[: shortest - 1] for p in split)):
        if any(p != parts[0] for p in parts):
            break
        shared.append(parts[0])
    return ".".join(shared) + "." if shared else ""


def _common_char_prefix(names: Sequence[str]) -> str:
    """Longest shared character prefix."""
    lo, hi = min(names), max(names)
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


def _brace_group(names: Sequence[str]) -> str:
    """``["res2_bn_s", "res2_bn_b"]`` -> ``"res2_bn_{s,b}"``; full BN parameter sets -> ``bn_*``."""
    prefix = _common_char_prefix(names)
    text = prefix + "{" + ",".join(n[len(prefix) :] for n in names) + "}"
    for full_set in (
        "bn_{beta,running_mean,running_var,gamma}",
        "bn_beta,bn_running_mean,bn_running_var,bn_gamma",
    ):
        text = text.replace(full_set, "bn_*")
    return text


def _group_by_module(keys: Sequence[str], original: Mapping[str, str]) -> Dict[str, List[str]]:
    """Map each key to the keys of its (shortest enclosing) module group.

    A group is the keys starting with some key's module prefix (text up to the last ``.``),
    shortest prefixes first; groups of one key, or whose checkpoint names share no prefix, are
    not formed.
    """
    prefixes = sorted({k[: k.rfind(".") + 1] for k in keys if "." in k}, key=len)
    groups: Dict[str, List[str]] = {}
    for prefix in prefixes:
        members = [k for k in keys if k.startswith(prefix)]
        if len(members) <= 1 or not _common_char_prefix([original[k] for k in members]):
            continue
        for k in members:
            groups.setdefault(k, members)
    return groups


def _log_matches(
    model_state_dict: Mapping[str, torch.Tensor], model_to_original: Mapping[str, str]
) -> None:
    """Log a table: model name (relative to the common prefix), checkpoint name(s), shape(s)."""
    matched = sorted(model_to_original.keys())
    prefix = _common_name_prefix(matched)
    groups = _group_by_module(matched, model_to_original)
    rows = []
    done: set = set()
    for key in matched:
        if key in done:
            continue
        if key in groups:
            group = groups[key]
            done.update(group)
            shapes = " ".join(str(tuple(model_state_dict[k].shape)).replace(" ", "") for k in group)
            rows.append(
                (
                    _common_name_prefix([k[len(prefix) :] for k in group]) + "*",
                    _brace_group([model_to_original[k] for k in group]),
                    shapes,
                )
            )
        else:
            rows.append(
                (key[len(prefix) :], model_to_original[key], str(tuple(model_state_dict[key].shape)))
            )
    table = tabulate(rows, tablefmt="pipe", headers=["Names in Model", "Names in Checkpoint", "Shapes"])
    where = f"submodule {prefix[:-1]}" if prefix else "model"
    logger.info(f"Following weights matched with {where}:\n{table}")
