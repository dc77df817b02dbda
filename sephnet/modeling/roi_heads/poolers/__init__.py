"""ROI poolers beyond detectron2's ``ROIPooler``: the multi-scale (box + context) pooler of
:mod:`.multiscale_pooler`."""
