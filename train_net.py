#!/usr/bin/env python
"""Train or evaluate a sephnet model: the project's detectron2-style entry point.

Examples::

    # train (and evaluate at the end) the CPU quickstart model on the synthetic shapes
    python train_net.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml

    # evaluate saved weights
    python train_net.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml \
        --eval-only MODEL.WEIGHTS output/quickstart/model_final.pth

    # continue an interrupted run from OUTPUT_DIR's last checkpoint (exactly)
    python train_net.py --config-file ... --resume

    # two worker processes (GPUs with CUDA, CPU processes with gloo otherwise)
    python train_net.py --config-file ... --num-gpus 2

    # also keep OUTPUT_DIR/model_best.pth: the checkpoint with the highest bbox AP so far
    python train_net.py --config-file ... --best-metric bbox/AP

In a terminal, a live progress line (iteration, ETA, loss, lr) sits under the log; when
the output goes to a file or pipe, the log holds detectron2's periodic lines only.

Framework names come from :mod:`sephnet.backend` (real detectron2 when it is installed,
otherwise sephnet's portable core); importing :mod:`sephnet` registers every sephnet
component and the ``shapes_train``/``shapes_val`` datasets.
"""
import logging
import os
from typing import Any, Dict, List, Optional

import torch

from sephnet import add_sephnet_config, validate_sephnet_config
from sephnet.backend import (
    CfgNode,
    COCOEvaluator,
    DefaultTrainer,
    DetectionCheckpointer,
    comm,
    default_argument_parser,
    default_setup,
    get_cfg,
    hooks,
    launch,
    verify_results,
)
from sephnet.engine import TerminalProgress
from sephnet.engine.fast_inference import fast_inference_model
from sephnet.solver import build_optimizer

logger = logging.getLogger("sephnet.train_net")


class Trainer(DefaultTrainer):
    """:class:`DefaultTrainer` with COCO-style evaluation (boxes and masks) and, on the
    main process, a live progress line when stdout is a terminal."""

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str = None):
        """``COCOEvaluator`` writing to ``output_folder`` (default ``OUTPUT_DIR/inference``)."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None):
        """detectron2's evaluation, of the fast form of a copy of ``model`` when
        ``MODEL.SEPH.FAST_INFERENCE.ENABLED`` (the trained model itself is not modified)."""
        return super().test(cfg, fast_inference_model(cfg, model), evaluators)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        """detectron2's optimizer, with sephnet's norms (EvoNormS0) decayed as norm layers."""
        return build_optimizer(cfg, model)

    def build_hooks(self) -> List[Optional[Any]]:
        """detectron2's hooks, then :class:`TerminalProgress` (main process)."""
        ret = super().build_hooks()
        if comm.is_main_process():
            ret.append(TerminalProgress())
        return ret


def setup(args) -> CfgNode:
    """The frozen config of this run: defaults (detectron2's + sephnet's) ← ``--config-file``
    ← command-line overrides, checked by :func:`validate_sephnet_config`, then
    :func:`default_setup` (output folder, logging, ``config.yaml``, seeding)."""
    cfg = get_cfg()
    add_sephnet_config(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    validate_sephnet_config(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args) -> Dict[str, Any]:
    """Evaluate (``--eval-only``) or train; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    if args.best_metric and comm.is_main_process():
        # after EvalHook, so it sees each evaluation's results; the trainer's checkpointer
        # stores the full state, so model_best.pth can also be resumed from
        trainer.register_hooks([
            hooks.BestCheckpointer(
                cfg.TEST.EVAL_PERIOD, trainer.checkpointer, args.best_metric, mode=args.best_mode
            )
        ])
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    """detectron2's :func:`default_argument_parser` plus ``--best-metric``/``--best-mode``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--best-metric",
        default="",
        metavar="NAME",
        help="keep OUTPUT_DIR/model_best.pth for the best value of this evaluation metric "
        "(e.g. bbox/AP, segm/AP50), checked after every evaluation",
    )
    parser.add_argument(
        "--best-mode",
        choices=("max", "min"),
        default="max",
        help="whether a larger (max) or smaller (min) --best-metric is better",
    )
    return parser


def invoke_main() -> None:
    """Parse the command line and run :func:`main` in every worker process."""
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
