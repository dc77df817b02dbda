"""The default config tree ``_C``: every key of detectron2 v0.6 with its default value.

Other parts of the core (and user configs) read these keys by name, so names, nesting,
types and values follow detectron2 v0.6 exactly. A config file may only set keys that
exist here (or that a project adds with its own ``add_*_config`` function).

Conventions worth knowing when reading values:

* Images enter the model as BGR in 0-255; ``PIXEL_MEAN``/``PIXEL_STD`` are per channel in
  that order (the defaults suit MSRA's Caffe2-converted ResNets: std 1).
* ``*_TRAIN``/``*_TEST`` keys apply only in training / inference.
* An empty string for a ``NAME`` or ``NORM`` key means "none".
"""

from sephnet.d2.config.config import CfgNode as CN

__all__ = ["_C"]

_C = CN()

# Format version of config files. Files declare it with a top-level VERSION key.
_C.VERSION = 2

# --------------------------------------------------------------------------------------
# MODEL: architecture selection and global model options
# --------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.LOAD_PROPOSALS = False  # read precomputed proposals instead of running an RPN
_C.MODEL.MASK_ON = False
_C.MODEL.KEYPOINT_ON = False
_C.MODEL.DEVICE = "cuda"
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # name in META_ARCH_REGISTRY
_C.MODEL.WEIGHTS = ""  # checkpoint path or URL to initialise from; "" = none
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]  # BGR, 0-255
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

# --------------------------------------------------------------------------------------
# INPUT: image sizes and formats
# --------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # shortest-edge candidates during training
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"  # "choice" among them, or "range" [min, max]
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800  # 0 disables resizing at test time
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal", "vertical" or "none"

# Random crop for training; TYPE is one of relative_range, relative, absolute,
# absolute_range. SIZE's meaning depends on TYPE (fractions or pixels, [h, w]).
_C.INPUT.CROP = CN({"ENABLED": False})
_C.INPUT.CROP.TYPE = "relative_range"
_C.INPUT.CROP.SIZE = [0.9, 0.9]

_C.INPUT.FORMAT = "BGR"  # channel order the model expects (a PIL mode string)
_C.INPUT.MASK_FORMAT = "polygon"  # or "bitmask"

# --------------------------------------------------------------------------------------
# DATASETS: names registered in DatasetCatalog
# --------------------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()
_C.DATASETS.PROPOSAL_FILES_TRAIN = ()  # one file per training dataset, same order
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN = 2000
_C.DATASETS.TEST = ()
_C.DATASETS.PROPOSAL_FILES_TEST = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = 1000

# --------------------------------------------------------------------------------------
# DATALOADER
# --------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch landscape and portrait images apart
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"  # or "RepeatFactorTrainingSampler"
_C.DATALOADER.REPEAT_THRESHOLD = 0.0  # used by RepeatFactorTrainingSampler
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images with no annotation

# --------------------------------------------------------------------------------------
# Backbone and FPN
# --------------------------------------------------------------------------------------
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"  # name in BACKBONE_REGISTRY
# Stages up to this index are frozen (0: nothing, 1: stem, 2: stem + res2, ...).
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = []  # backbone features fed to the FPN, e.g. res2..res5
_C.MODEL.FPN.OUT_CHANNELS = 256
_C.MODEL.FPN.NORM = ""  # "", "GN", "SyncBN", ...
_C.MODEL.FPN.FUSE_TYPE = "sum"  # top-down merge: "sum" or "avg"

# --------------------------------------------------------------------------------------
# Proposal generation
# --------------------------------------------------------------------------------------
_C.MODEL.PROPOSAL_GENERATOR = CN()
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"  # "RPN", "RRPN", or "PrecomputedProposals"
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0  # proposals smaller than this (input pixels) are dropped

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
# One list per feature level (a single list is shared by all levels). Sizes are the
# square roots of anchor areas, in absolute input pixels.
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]  # height / width
_C.MODEL.ANCHOR_GENERATOR.ANGLES = [[-90, 0, 90]]  # degrees; rotated anchors only
# Anchor centre offset inside a feature cell, in units of the stride (0.0 or 0.5).
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

_C.MODEL.RPN = CN()
_C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"  # name in RPN_HEAD_REGISTRY
_C.MODEL.RPN.IN_FEATURES = ["res4"]
# Anchors reaching further than this many pixels outside the image are ignored in
# training; a negative value keeps every anchor.
_C.MODEL.RPN.BOUNDARY_THRESH = -1
# IoU < 0.3 -> negative (0), in [0.3, 0.7) -> ignored (-1), >= 0.7 -> positive (1).
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image for the losses
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
_C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # (dx, dy, dw, dh) scaling
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0  # 0 makes smooth-L1 plain L1
_C.MODEL.RPN.LOSS_WEIGHT = 1.0
# Top-k boxes kept per feature level before NMS, and per image after it.
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
# Hidden conv widths of the RPN head; -1 means "same as the input channels".
_C.MODEL.RPN.CONV_DIMS = [-1]

# --------------------------------------------------------------------------------------
# ROI heads
# --------------------------------------------------------------------------------------
_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"  # name in ROI_HEADS_REGISTRY
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80  # foreground classes only
_C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
# IoU < 0.5 -> background (0), >= 0.5 -> foreground (1).
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # RoIs sampled per image
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Inference: drop detections scoring below this, then per-class NMS at this IoU.
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True  # add gt boxes to the proposals in training

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NAME = ""  # name in ROI_BOX_HEAD_REGISTRY; "" = none
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"  # also "giou", "diou", "ciou"
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # 0 = adaptive
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"  # "ROIPool", "ROIAlign", "ROIAlignV2"
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
_C.MODEL.ROI_BOX_HEAD.NORM = ""  # norm after each conv: "", "GN", "BN", ...
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
# Cascade: whether a stage's box head is trained on the previous stage's boxes.
_C.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False

_C.MODEL.ROI_BOX_CASCADE_HEAD = CN()
# One entry per cascade stage; the first stage shares ROI_HEADS' matcher role.
_C.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = (
    (10.0, 10.0, 5.0, 5.0),
    (20.0, 20.0, 10.0, 10.0),
    (30.0, 30.0, 15.0, 15.0),
)
_C.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6, 0.7)

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NORM = ""
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False  # one mask for all classes
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"

_C.MODEL.ROI_KEYPOINT_HEAD = CN()
_C.MODEL.ROI_KEYPOINT_HEAD.NAME = "KRCNNConvDeconvUpsampleHead"
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = (512,) * 8
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 17  # COCO person keypoints
_C.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 1  # images with fewer are skipped
# True: normalise the loss by the visible keypoints of the batch; False: by a fixed count.
_C.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS = True
_C.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT = 1.0
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = "ROIAlignV2"

# --------------------------------------------------------------------------------------
# Semantic segmentation and panoptic FPN
# --------------------------------------------------------------------------------------
_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255  # label value excluded from the loss
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 54  # COCO panoptic: 53 stuff classes + 1 "things"
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4  # output stride of the head
_C.MODEL.SEM_SEG_HEAD.NORM = "GN"
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0

_C.MODEL.PANOPTIC_FPN = CN()
_C.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = 1.0  # scales the instance losses
_C.MODEL.PANOPTIC_FPN.COMBINE = CN({"ENABLED": True})  # ENABLED is kept but unused
_C.MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH = 0.5
_C.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 4096
_C.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.5

# --------------------------------------------------------------------------------------
# RetinaNet
# --------------------------------------------------------------------------------------
_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.NUM_CLASSES = 80
_C.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
_C.MODEL.RETINANET.NUM_CONVS = 4  # per subnet (classification and regression)
# IoU < 0.4 -> negative, [0.4, 0.5) -> ignored, >= 0.5 -> positive.
_C.MODEL.RETINANET.IOU_THRESHOLDS = [0.4, 0.5]
_C.MODEL.RETINANET.IOU_LABELS = [0, -1, 1]
_C.MODEL.RETINANET.PRIOR_PROB = 0.01  # initial foreground probability of the classifier
_C.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05
_C.MODEL.RETINANET.TOPK_CANDIDATES_TEST = 1000  # per level, before NMS
_C.MODEL.RETINANET.NMS_THRESH_TEST = 0.5
_C.MODEL.RETINANET.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_C.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 2.0
_C.MODEL.RETINANET.FOCAL_LOSS_ALPHA = 0.25
_C.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.1
_C.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.RETINANET.NORM = ""  # norm in the subnet convs; "" = none

# --------------------------------------------------------------------------------------
# ResNet
# --------------------------------------------------------------------------------------
_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
_C.MODEL.RESNETS.OUT_FEATURES = ["res4"]  # C4 models use res4; FPN models res2..res5
_C.MODEL.RESNETS.NUM_GROUPS = 1  # 1 = ResNet, > 1 = ResNeXt
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64  # bottleneck width per group in res2
# True (MSRA weights): the stride-2 sits in the first 1x1 conv; False (torchvision): in the 3x3.
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
_C.MODEL.RESNETS.RES5_DILATION = 1  # 1 or 2; 2 keeps res5 at stride 16
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # 64 for ResNet-18/34
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]  # res2..res5
_C.MODEL.RESNETS.DEFORM_MODULATED = False
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1

# --------------------------------------------------------------------------------------
# SOLVER
# --------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # or "WarmupCosineLR"
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.0001
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of normalisation-layer parameters
_C.SOLVER.GAMMA = 0.1  # LR multiplier at each of STEPS
_C.SOLVER.STEPS = (30000,)
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_METHOD = "linear"  # or "constant"
_C.SOLVER.CHECKPOINT_PERIOD = 5000  # iterations between checkpoints
_C.SOLVER.IMS_PER_BATCH = 16  # across all workers
# > 0: the world size the schedule was written for; the trainer rescales batch size, LR
# and iteration counts when running on a different number of workers. 0 disables it.
_C.SOLVER.REFERENCE_WORLD_SIZE = 0
_C.SOLVER.BIAS_LR_FACTOR = 1.0  # LR multiplier for bias parameters
_C.SOLVER.WEIGHT_DECAY_BIAS = None  # None: same as WEIGHT_DECAY

# Gradient clipping. CLIP_TYPE "value" clips each element to [-CLIP_VALUE, CLIP_VALUE];
# "norm" rescales each parameter's gradient to an NORM_TYPE-norm of at most CLIP_VALUE.
_C.SOLVER.CLIP_GRADIENTS = CN({"ENABLED": False})
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # "inf" is allowed for the max norm

_C.SOLVER.AMP = CN({"ENABLED": False})  # mixed-precision training (AMPTrainer)

# --------------------------------------------------------------------------------------
# TEST: evaluation
# --------------------------------------------------------------------------------------
_C.TEST = CN()
# Each entry is [task, metric, expected value, tolerance], checked by verify_results.
_C.TEST.EXPECTED_RESULTS = []
_C.TEST.EVAL_PERIOD = 0  # iterations between evaluations during training; 0 = only at the end
# Per-keypoint OKS sigmas for keypoint AP; [] uses COCO's.
_C.TEST.KEYPOINT_OKS_SIGMAS = []
_C.TEST.DETECTIONS_PER_IMAGE = 100  # maximum detections returned per image

_C.TEST.AUG = CN({"ENABLED": False})  # test-time augmentation
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
_C.TEST.AUG.MAX_SIZE = 4000
_C.TEST.AUG.FLIP = True

_C.TEST.PRECISE_BN = CN({"ENABLED": False})  # recompute BN statistics before evaluating
_C.TEST.PRECISE_BN.NUM_ITER = 200

# --------------------------------------------------------------------------------------
# Miscellaneous
# --------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # negative: a different random seed every run
_C.CUDNN_BENCHMARK = False
_C.VIS_PERIOD = 0  # iterations between training visualisations; 0 disables them

# Free-form global knobs for quick experiments; not read by the core.
_C.GLOBAL = CN()
_C.GLOBAL.HACK = 1.0
