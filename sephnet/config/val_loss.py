"""Keys of the validation-loss hook: ``MODEL.SEPH.VAL_LOSS.*``.

See ``sephnet/engine/validation_loss.py``.

Read by ``train_net.Trainer.build_hooks``. Off by default.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.VAL_LOSS"
_DEFAULT_PERIOD = 5000
_WRITER_PERIOD = 20  # DefaultTrainer.build_hooks' PeriodicWriter


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.VAL_LOSS.*``."""
    node = cfg.MODEL.SEPH.VAL_LOSS = CfgNode()
    # Compute the training losses on DATASETS every PERIOD iterations and after the last
    # iteration, written as val_loss_cls, val_loss_box_reg, ..., val_total_loss to
    # metrics.json and TensorBoard (no gradients; BN statistics, dropout/DropBlock and GHM
    # counts frozen; the training RNG untouched).
    node.ENABLED = False
    # Registered datasets with annotations (a tuple of names, at least one when ENABLED),
    # e.g. ("coco_2017_val",). Images get the test-time resize and no flip.
    node.DATASETS = ()
    # Iterations between two validations: a multiple of 20, the period of detectron2's
    # DefaultTrainer writers, which write only the latest value of each scalar (a value
    # between two writes would never reach metrics.json).
    node.PERIOD = _DEFAULT_PERIOD


def validate_config(cfg: CfgNode) -> None:
    """Check the keys: ENABLED a bool; when on, DATASETS a non-empty list of strings and
    PERIOD a positive multiple of 20, MODEL.LOAD_PROPOSALS off; when off, DATASETS and PERIOD left at their defaults (unread).

    Whether the datasets are registered is checked when the hook is built (datasets may be
    registered after the config is read).

    Raises:
        ValueError: naming the offending keys and values.
    """
    node = cfg.MODEL.SEPH.VAL_LOSS
    if not isinstance(node.ENABLED, bool):
        raise ValueError(f"{_KEY}.ENABLED={node.ENABLED!r}; expected True or False.")
    names, period = node.DATASETS, node.PERIOD
    if not node.ENABLED:
        if len(names) or period != _DEFAULT_PERIOD:
            raise ValueError(
                f"{_KEY}.DATASETS={names!r} / PERIOD={period!r} are only read with "
                f"{_KEY}.ENABLED=True."
            )
        return
    if not isinstance(names, (list, tuple)) or not names or not all(
        isinstance(n, str) and n for n in names
    ):
        raise ValueError(f"{_KEY}.DATASETS={names!r}; expected a non-empty list of dataset names.")
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"{_KEY}.PERIOD={period!r}; expected an int >= 1.")
    if cfg.MODEL.LOAD_PROPOSALS:
        raise ValueError(
            f"{_KEY}.ENABLED=True with MODEL.LOAD_PROPOSALS=True: the validation images are read "
            "without precomputed proposals; validation losses need the model's own proposals."
        )
    if period % _WRITER_PERIOD:
        raise ValueError(
            f"{_KEY}.PERIOD={period}; expected a multiple of {_WRITER_PERIOD}, the writers' "
            "period (other values would be overwritten before they are written)."
        )
