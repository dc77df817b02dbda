"""Keys of the inference fast path: ``MODEL.SEPH.FAST_INFERENCE.*`` (see
``sephnet.engine.fast_inference``; evaluation only, training is unaffected)."""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.FAST_INFERENCE"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.FAST_INFERENCE.*`` (off)."""
    node = cfg.MODEL.SEPH.FAST_INFERENCE = CfgNode()
    # Evaluate (train_net's --eval-only and in-training evaluations) with the fast form of the
    # model: frozen/eval batch norm folded into the convolutions, EvoNormS0 in fewer memory
    # passes, ROIAlign's boxes split over the threads, the box head's NMS stopped once the
    # TEST.DETECTIONS_PER_IMAGE best are known (same detections up to float rounding).
    node.ENABLED = False
    # With ENABLED: keep weights and activations in channels-last memory order (oneDNN's
    # preferred layout on CPU; same numbers up to rounding).
    node.CHANNELS_LAST = True
    # With ENABLED: run convolutions and matrix products in bfloat16 (torch.autocast). Changes
    # AP slightly; fast only on CPUs with native bf16 (AVX512-BF16, AMX) or on GPUs.
    node.BF16 = False


def validate_config(cfg: CfgNode) -> None:
    """CHANNELS_LAST and BF16 only mean something with ENABLED."""
    node = cfg.MODEL.SEPH.FAST_INFERENCE
    if not node.ENABLED and node.BF16:
        raise ValueError(f"{_KEY}.BF16 is True but {_KEY}.ENABLED is False; set ENABLED True "
                         "to use the fast path.")
    if not node.ENABLED and not node.CHANNELS_LAST:
        raise ValueError(f"{_KEY}.CHANNELS_LAST is False but {_KEY}.ENABLED is False; it only "
                         "applies to the fast path.")
