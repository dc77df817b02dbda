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
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional

import torch

from sephnet import add_sephnet_config, validate_sephnet_config
from sephnet.backend import describe as describe_backend
from sephnet.backend import (
    CfgNode,
    COCOEvaluator,
    DefaultTrainer,
    DetectionCheckpointer,
    GeneralizedRCNNWithTTA,
    comm,
    default_argument_parser,
    default_setup,
    get_cfg,
    hooks,
    import_module,
    launch,
    setup_logger,
    verify_results,
)
from sephnet.data import build_train_loader
from sephnet.engine import TerminalProgress, ValidationLoss, build_tracking_writers
from sephnet.engine.fast_inference import fast_inference_model
from sephnet.engine.file_checks import (
    check_config_file,
    check_weights_file,
    check_weights_fit_model,
    guard_dataset_json,
)
from sephnet.engine.preemption import PreemptionCheckpoint, ignore_stop_signals_in_forked_children
from sephnet.solver import build_lr_scheduler, build_optimizer

logger = logging.getLogger("sephnet.train_net")


class Trainer(DefaultTrainer):
    """:class:`DefaultTrainer` with COCO-style evaluation (boxes and masks), sephnet's
    training augmentations, with ``TEST.AUG.ENABLED`` a second evaluation under test-time
    augmentation at the end of training (results suffixed ``_TTA``, as detectron2's
    ``tools/train_net.py``) and, on the main process, a live progress line when stdout is a
    terminal."""

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

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        """:func:`sephnet.data.build_train_loader`: detectron2's training loader with sephnet's
        ``MODEL.SEPH.AUGMENT`` augmentations and ``MODEL.SEPH.STITCH`` batch stitching when on."""
        return build_train_loader(cfg)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        """detectron2's schedule, or the original's cosine (``MODEL.SEPH.SOLVER.COSINE_*``)."""
        return build_lr_scheduler(cfg, optimizer)

    def resume_or_load(self, resume: bool = True) -> None:
        """Check ``MODEL.WEIGHTS`` (:func:`check_weights`), then load as detectron2 does."""
        check_weights(self.cfg, self.model, self.checkpointer, resume, eval_only=False)
        super().resume_or_load(resume=resume)

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model: torch.nn.Module) -> Dict[str, Any]:
        """Evaluate ``GeneralizedRCNNWithTTA(cfg, model)`` (views from ``TEST.AUG.*``) on
        every test dataset, writing to ``OUTPUT_DIR/inference_TTA``; each result key gets
        the suffix ``_TTA`` (e.g. ``bbox_TTA``)."""
        logger.info("Evaluating with test-time augmentation (TEST.AUG) ...")
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, GeneralizedRCNNWithTTA(cfg, model), evaluators)
        return OrderedDict((f"{name}_TTA", value) for name, value in results.items())

    def build_writers(self):
        """detectron2's writers (console, metrics.json, TensorBoard), then the experiment
        trackers ``MODEL.SEPH.TRACKING`` enables (Weights & Biases, MLflow)."""
        return super().build_writers() + build_tracking_writers(self.cfg)

    def build_hooks(self) -> List[Optional[Any]]:
        """detectron2's hooks, with :class:`ValidationLoss` (``MODEL.SEPH.VAL_LOSS.ENABLED``)
        and the end-of-training TTA evaluation (``TEST.AUG.ENABLED``) before the writer, so
        their numbers reach ``metrics.json``, then :class:`TerminalProgress` (main process)."""
        ret = super().build_hooks()
        before_writer = []
        if self.cfg.MODEL.SEPH.VAL_LOSS.ENABLED:
            before_writer.append(ValidationLoss.from_config(self.cfg))
        if self.cfg.TEST.AUG.ENABLED:
            before_writer.append(hooks.EvalHook(0, self._test_tta))
        writers = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
        at = writers[0] if writers else len(ret)
        ret[at:at] = before_writer
        if comm.is_main_process():
            ret.append(TerminalProgress())
        return ret

    def _test_tta(self) -> Dict[str, Any]:
        results = self.test_with_TTA(self.cfg, self.model)
        last = getattr(self, "_last_eval_results", None)
        if isinstance(last, dict):  # train() returns the plain and the TTA results
            last.update(results)
        return results


def setup(args) -> CfgNode:
    """The frozen config of this run: defaults (detectron2's + sephnet's) ← ``--config-file``
    ← command-line overrides, checked by :func:`validate_sephnet_config`, then
    :func:`default_setup` (output folder, logging, ``config.yaml``, seeding) and sephnet's
    logger (which logs the backend in use)."""
    cfg = get_cfg()
    add_sephnet_config(cfg)
    if args.config_file:
        check_config_file(args.config_file)
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    validate_sephnet_config(cfg)
    cfg.freeze()
    for name in cfg.DATASETS.TRAIN:
        guard_dataset_json(name, training=True)
    for name in cfg.DATASETS.TEST:
        guard_dataset_json(name, training=False)
    default_setup(cfg, args)
    # default_setup sets up detectron2's and fvcore's loggers; sephnet's messages (the backend
    # in use, the fast path, its components' warnings) go to the same console and log.txt
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sephnet")
    logging.getLogger("sephnet").info(describe_backend())
    return cfg


def check_weights(cfg: CfgNode, model: torch.nn.Module, checkpointer, resume: bool, eval_only: bool) -> None:
    """Refuse an unusable ``MODEL.WEIGHTS`` before loading it (one line naming the file), unless
    ``--resume`` will load OUTPUT_DIR's last checkpoint instead. For ``--eval-only`` the file
    must give every weight of the model (evaluating random weights is never intended)."""
    if resume and checkpointer.has_checkpoint():
        return
    state = check_weights_file(cfg.MODEL.WEIGHTS)
    if state is not None:
        check_weights_fit_model(state, model, cfg.MODEL.WEIGHTS, require_all=eval_only)


def main(args) -> Dict[str, Any]:
    """Evaluate (``--eval-only``) or train; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        check_weights(cfg, model, checkpointer, args.resume, eval_only=True)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
            append_metrics(cfg.OUTPUT_DIR, results)
        return results

    ignore_stop_signals_in_forked_children()  # data-loader workers: the main process stops them
    trainer = Trainer(cfg)
    if args.best_metric and comm.is_main_process():
        # after EvalHook, so it sees each evaluation's results; the trainer's checkpointer
        # stores the full state, so model_best.pth can also be resumed from
        trainer.register_hooks([
            hooks.BestCheckpointer(
                cfg.TEST.EVAL_PERIOD, trainer.checkpointer, args.best_metric, mode=args.best_mode
            )
        ])
    # last, so that a signalled iteration completes before the checkpoint: SIGTERM/SIGINT end the
    # run with a resumable checkpoint and exit code 75 (a second signal exits at once)
    trainer.register_hooks([PreemptionCheckpoint()])
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def append_metrics(output_dir: str, results: Dict[str, Any]) -> None:
    """Append ``results`` as one line of ``output_dir/metrics.json`` (flattened keys such as
    ``bbox/AP`` and ``bbox_TTA/AP``, the format of training's evaluation lines), so an
    ``--eval-only`` run leaves its numbers where training leaves them."""
    flat = import_module("evaluation.testing").flatten_results_dict(results)
    if not flat:
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "a") as f:
        f.write(json.dumps({k: float(v) for k, v in flat.items()}, sort_keys=True) + "\n")


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
