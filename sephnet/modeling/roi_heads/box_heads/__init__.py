"""Box heads (``SEPH_BOX_HEAD_REGISTRY``, chosen by ``MODEL.SEPH.BOX_HEAD.NAME``); importing
this package registers every one.

Contract (:mod:`sephnet.modeling.roi_heads.decoupled_features`): ``forward`` reads the pooled
ROI features and returns ``DecoupledFeatures(cls, box[, iou])``; ``output_shapes`` gives their
``ShapeSpec``. Every registered head declares on its class what it can read, which config
validation (``sephnet/config/``) reads instead of keeping lists of names:

* ``input_kind``: what the ROI heads must pool for it: "pooled" (one map ``[R, C, S, S]``),
  "context_pair" (the multi-scale pooler's ``ContextPair``; needs the pooler, no ROI hook)
  or "box_sizes" (``SizedFeatures`` from ``BoxSizeROIPooler``);
* ``reads_decoupled``: it also reads an ROI hook's ``DecoupledFeatures`` and, positionally,
  the ``ContextPair`` (cls tower on the box crop, box tower on the context crop);
* ``normed_widths``: ``(width key, count key or None)`` pairs of ``MODEL.SEPH.BOX_HEAD``: the
  widths its norm normalises (when the count is > 0, or always for None), which must divide
  into the norm's groups.

Every module of this package is imported here (so its ``@SEPH_BOX_HEAD_REGISTRY.register()``
runs): adding a head is adding one module, e.g. :mod:`.conv_fc_heads` (the conv/FC tower
heads, built from :mod:`.conv_fc_tower`), :mod:`.shared_conv_head`, :mod:`.upstream_box_head`
(detectron2's head, the default), :mod:`.context_attention_heads`, :mod:`.size_expert_head`,
:mod:`.iou_attention_head`.
"""
import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
