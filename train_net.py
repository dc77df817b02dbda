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

Framework names come from :mod:`sephnet.backend` (real detectron2 when it is installed,
otherwise sephnet's portable core); importing :mod:`sephnet.data` registers the
``shapes_train``/``shapes_val`` datasets.
"""
import logging
import os
from typing import Any, Dict

import sephnet.data  # noqa: F401  (registers the shapes datasets)
from sephnet.backend import (
    CfgNode,
    COCOEvaluator,
    DefaultTrainer,
    DetectionCheckpointer,
    comm,
    default_argument_parser,
    default_setup,
    get_cfg,
    launch,
    verify_results,
)

logger = logging.getLogger("sephnet.train_net")


class Trainer(DefaultTrainer):
    """:class:`DefaultTrainer` with COCO-style evaluation (boxes and masks)."""

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str = None):
        """``COCOEvaluator`` writing to ``output_folder`` (default ``OUTPUT_DIR/inference``)."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)


def setup(args) -> CfgNode:
    """The frozen config of this run: defaults ← ``--config-file`` ← command-line overrides,
    then :func:`default_setup` (output folder, logging, ``config.yaml``, seeding)."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
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
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    """Parse the command line and run :func:`main` in every worker process."""
    args = default_argument_parser().parse_args()
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
