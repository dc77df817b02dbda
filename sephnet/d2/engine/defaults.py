"""Default boilerplate of a detectron2 project (detectron2.engine.defaults).

* :func:`default_argument_parser` and :func:`default_setup`: the command line and the
  start-up routine (logging, environment report, ``OUTPUT_DIR/config.yaml``, seeding);
* :func:`default_writers`: terminal, ``metrics.json`` and TensorBoard event writers;
* :class:`DefaultPredictor`: one BGR image in, one prediction dict out;
* :class:`DefaultTrainer`: config → model, optimizer, scheduler, data, checkpointer and
  the standard hooks, with exact resume (see :class:`~.train_loop.SimpleTrainer`).
"""
import argparse
import logging
import os
import sys
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from fvcore.nn.precise_bn import get_bn_modules
from torch.nn.parallel import DistributedDataParallel

import sephnet.d2.data.transforms as T
from sephnet.d2.checkpoint import DetectionCheckpointer
from sephnet.d2.config import CfgNode
from sephnet.d2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from sephnet.d2.evaluation import DatasetEvaluator, inference_on_dataset, print_csv_format, verify_results
from sephnet.d2.modeling.meta_arch.build import build_model
from sephnet.d2.solver import build_lr_scheduler, build_optimizer
from sephnet.d2.utils import comm
from sephnet.d2.utils.collect_env import collect_env_info
from sephnet.d2.utils.env import seed_all_rng
from sephnet.d2.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter
from sephnet.d2.utils.file_io import PathManager
from sephnet.d2.utils.logger import setup_logger

from . import hooks
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "DefaultPredictor",
    "DefaultTrainer",
]


def create_ddp_model(model: torch.nn.Module, *, fp16_compression: bool = False, **kwargs: Any) -> torch.nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when the world has several processes.

    Args:
        model: the model.
        fp16_compression: compress gradients to fp16 for the all-reduce (CUDA).
        kwargs: passed to ``DistributedDataParallel``; ``device_ids`` defaults to the local
            rank when the model is on CUDA (and is left unset for CPU models).

    Returns:
        ``model`` itself in a single process, else the DDP wrapper.
    """
    if comm.get_world_size() == 1:
        return model
    on_cuda = any(p.is_cuda for p in model.parameters())
    if "device_ids" not in kwargs and on_cuda:
        kwargs["device_ids"] = [comm.get_local_rank()]
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp


def _default_dist_port() -> int:
    """A per-user port in [2**15 + 2**14, 2**16), so users of one machine rarely collide."""
    uid = os.getuid() if sys.platform != "win32" else 1
    return 2**15 + 2**14 + hash(uid) % 2**14


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line shared by detectron2 tools.

    Options: ``--config-file``, ``--resume``, ``--eval-only``, ``--num-gpus`` (processes
    per machine; CPU workers when CUDA is absent), ``--num-machines``, ``--machine-rank``,
    ``--dist-url`` and trailing ``KEY VALUE`` config overrides (``opts``).
    """
    prog = sys.argv[0]
    usage_examples = (
        "Examples:\n\n"
        f"  one machine, 8 processes:   {prog} --config-file c.yaml --num-gpus 8\n"
        f"  with config overrides:      {prog} --config-file c.yaml SOLVER.BASE_LR 0.01 "
        "MODEL.WEIGHTS w.pth\n"
        f"  two machines (run on each): {prog} --config-file c.yaml --num-machines 2 "
        "--machine-rank <0|1> --dist-url tcp://<host0>:<port>\n"
    )
    parser = argparse.ArgumentParser(
        epilog=epilog or usage_examples, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="the YAML config to run")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from the last checkpoint in OUTPUT_DIR if there is one "
        "(see DefaultTrainer.resume_or_load)",
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS, do not train"
    )
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes on this machine: one per GPU, or CPU worker processes without CUDA",
    )
    parser.add_argument(
        "--num-machines", type=int, default=1, help="how many machines take part in the job"
    )
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="this machine's index, 0 .. num-machines-1"
    )
    parser.add_argument(
        "--dist-url",
        default=f"tcp://127.0.0.1:{_default_dist_port()}",
        help="torch.distributed init URL, or 'auto' for a free local port",
    )
    parser.add_argument(
        "opts",
        help="config overrides at the end of the command, as space-separated KEY VALUE pairs",
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> None:
    """Common start-up of a job.

    1. Create ``cfg.OUTPUT_DIR`` (main process) and set up the ``detectron2`` (with the
       core's ``sephnet.d2``) and ``fvcore`` loggers, writing ``OUTPUT_DIR/log.txt``.
    2. Log rank and world size, the environment, the command line arguments and the config
       file's contents.
    3. Write the full config to ``OUTPUT_DIR/config.yaml`` (main process).
    4. Seed all RNGs with ``cfg.SEED + rank`` (a random seed when ``SEED`` < 0).
    5. Unless ``args.eval_only``, set ``torch.backends.cudnn.benchmark`` from
       ``CUDNN_BENCHMARK``.
    """
    output_dir = cfg.get("OUTPUT_DIR", "")
    if comm.is_main_process() and output_dir:
        PathManager.mkdirs(output_dir)

    rank = comm.get_rank()
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    logger = setup_logger(output_dir, distributed_rank=rank)

    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Environment info:\n%s", collect_env_info())
    logger.info("Command line arguments: %s", args)
    config_file = getattr(args, "config_file", "")
    if config_file:
        with PathManager.open(config_file, "r") as f:
            logger.info("Contents of args.config_file=%s:\n%s", config_file, f.read())

    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        logger.info("Running with full config:\n%s", cfg.dump())
        with PathManager.open(path, "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", path)

    seed = cfg.get("SEED", -1)
    seed_all_rng(None if seed < 0 else seed + rank)

    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.get("CUDNN_BENCHMARK", False)


def default_writers(output_dir: str, max_iter: Optional[int] = None) -> List[EventWriter]:
    """``[CommonMetricPrinter(max_iter), JSONWriter(<output_dir>/metrics.json),
    TensorboardXWriter(output_dir)]``; creates ``output_dir``."""
    PathManager.mkdirs(output_dir)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


class DefaultPredictor:
    """Single-image inference for demos: loads ``cfg.MODEL.WEIGHTS``, resizes like the
    test set (``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``) and converts to ``INPUT.FORMAT``.

    Attributes:
        metadata: ``MetadataCatalog`` entry of ``cfg.DATASETS.TEST[0]`` (when set).

    Example::

        predictor = DefaultPredictor(cfg)
        outputs = predictor(cv2.imread("input.jpg"))   # {"instances": Instances, ...}
    """

    def __init__(self, cfg: CfgNode):
        """
        Raises:
            ValueError: ``cfg.INPUT.FORMAT`` is neither ``"RGB"`` nor ``"BGR"``.
        """
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={cfg.INPUT.FORMAT!r}; DefaultPredictor supports 'RGB' or 'BGR'.")
        self.cfg = cfg.clone()  # the model may modify its config
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        """
        Args:
            original_image: uint8 array (H, W, 3) in BGR order.

        Returns:
            The model's output dict for this image (e.g. ``{"instances": Instances}``),
            in original image coordinates.
        """
        with torch.no_grad():
            if self.input_format == "RGB":
                original_image = original_image[:, :, ::-1]
            height, width = original_image.shape[:2]
            image = self.aug.get_transform(original_image).apply_image(original_image)
            image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
            return self.model([{"image": image, "height": height, "width": width}])[0]


class DefaultTrainer(TrainerBase):
    """The standard training workflow, built from a config.

    It builds the model, optimizer, LR scheduler and train loader through overridable
    classmethods, wraps them in a :class:`SimpleTrainer` (:class:`AMPTrainer` when
    ``SOLVER.AMP.ENABLED``), makes a :class:`DetectionCheckpointer` on ``OUTPUT_DIR`` whose
    checkpoints hold this trainer's state, and registers :meth:`build_hooks`.

    Example::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load()  # last checkpoint of OUTPUT_DIR, or MODEL.WEIGHTS
        trainer.train()

    Checkpoints also hold the optimizer, the RNG states and the data position (a
    detectron2 v0.6 DefaultTrainer checkpoint holds only iteration and scheduler), so
    ``resume_or_load(resume=True)`` continues exactly where the run stopped; they are
    written atomically (see :class:`DetectionCheckpointer`).

    Attributes:
        scheduler: the LR scheduler.
        checkpointer (DetectionCheckpointer): saves to ``cfg.OUTPUT_DIR``.
        cfg (CfgNode): the (possibly auto-scaled) config.
    """

    def __init__(self, cfg: CfgNode):
        super().__init__()
        if not logging.getLogger("sephnet.d2").isEnabledFor(logging.INFO):
            setup_logger()  # default_setup was not called
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)

        model = create_ddp_model(model, broadcast_buffers=False)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        # The inner trainer runs the step and so calls after_backward on *its* hooks:
        # share this trainer's hook list with it.
        self._trainer._hooks = self._hooks

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Atomic writes: a run killed while saving keeps a complete last checkpoint.
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg

        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from ``OUTPUT_DIR``'s last checkpoint, or load ``cfg.MODEL.WEIGHTS``.

        With ``resume=True`` and a ``last_checkpoint`` file in ``OUTPUT_DIR``, all states
        (model, optimizer, scheduler, RNG, data position) are restored and training
        continues after the saved iteration; ``MODEL.WEIGHTS`` is ignored. Otherwise only
        the model weights of ``MODEL.WEIGHTS`` are loaded and training starts at 0.
        """
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            # The checkpoint's iteration was completed: continue with the next one.
            self.start_iter = self.iter + 1

    def build_hooks(self) -> List[Optional[HookBase]]:
        """Timer, LR scheduler, PreciseBN (if enabled), checkpointer (main process),
        evaluation, writers (main process), in that order."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # PreciseBN's loader: no worker processes

        ret: List[Optional[HookBase]] = [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            hooks.PreciseBN(
                cfg.TEST.EVAL_PERIOD, self.model, self.build_train_loader(cfg), cfg.TEST.PRECISE_BN.NUM_ITER
            )
            if cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(self.model)
            else None,
        ]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return ret

    def build_writers(self) -> List[EventWriter]:
        """:func:`default_writers` on ``OUTPUT_DIR``; override for other writers."""
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    def train(self) -> Optional[Mapping[str, Any]]:
        """Train from ``start_iter`` to ``MAX_ITER``.

        Returns:
            The last evaluation results when ``TEST.EXPECTED_RESULTS`` is set (after
            checking them with ``verify_results``), else ``None``.

        Raises:
            RuntimeError: ``TEST.EXPECTED_RESULTS`` is set but no evaluation ran.
            FloatingPointError: a loss became NaN or infinite; the message names the iteration,
                the loss dict and the last good checkpoint to resume from.
        """
        try:
            super().train(self.start_iter, self.max_iter)
        except FloatingPointError as e:
            last = self.checkpointer.get_checkpoint_file() or "none (no checkpoint was written)"
            raise FloatingPointError(
                f"{e}\nTraining stopped. Last good checkpoint: {last} "
                "(resume from it with --resume after fixing the cause, e.g. a lower SOLVER.BASE_LR)."
            ) from e
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            if not hasattr(self, "_last_eval_results"):
                raise RuntimeError("TEST.EXPECTED_RESULTS is set but no evaluation ran during training.")
            verify_results(self.cfg, self._last_eval_results)
            return self._last_eval_results
        return None

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def state_dict(self) -> Dict[str, Any]:
        """Iteration, hook states, and the inner trainer's optimizer / RNG / data state."""
        ret = super().state_dict()
        ret.update(self._trainer.state_dict())
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "optimizer" in state_dict:
            # Hooks were restored above; the inner trainer shares them.
            self._trainer.load_state_dict({k: v for k, v in state_dict.items() if k != "hooks"})
        else:
            # A detectron2 v0.6 trainer checkpoint: iteration and hooks only.
            self._trainer.iter = self.iter

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        """``build_model(cfg)``, logged; override for another model."""
        model = build_model(cfg)
        logging.getLogger(__name__).info("Model:\n%s", model)
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        """``sephnet.d2.solver.build_optimizer``; override for another optimizer."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        """``sephnet.d2.solver.build_lr_scheduler``; override for another schedule."""
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        """``build_detection_train_loader(cfg)``; override for another loader."""
        return build_detection_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        """``build_detection_test_loader(cfg, dataset_name)``; override for another loader."""
        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> DatasetEvaluator:
        """Not implemented here: subclasses return the evaluator of ``dataset_name``
        (see ``train_net.py``)."""
        raise NotImplementedError(
            "DefaultTrainer has no default evaluator: implement build_evaluator() in a subclass "
            "(see train_net.py), or pass evaluators to DefaultTrainer.test()."
        )

    @classmethod
    def test(
        cls,
        cfg: CfgNode,
        model: torch.nn.Module,
        evaluators: Optional[Union[DatasetEvaluator, Sequence[DatasetEvaluator]]] = None,
    ) -> Dict[str, Any]:
        """Evaluate ``model`` (weights already loaded) on every ``cfg.DATASETS.TEST``.

        Args:
            cfg: the config.
            model: the model to evaluate.
            evaluators: one per test dataset; ``None`` calls :meth:`build_evaluator`.

        Returns:
            ``{dataset_name: results}``, or just the results when there is one dataset.

        Raises:
            ValueError: ``evaluators`` has a different length than ``cfg.DATASETS.TEST``.
            TypeError: an evaluator returned a non-dict on the main process.
        """
        logger = logging.getLogger(__name__)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(cfg.DATASETS.TEST) != len(evaluators):
            raise ValueError(
                f"{len(evaluators)} evaluators given for {len(cfg.DATASETS.TEST)} test datasets "
                f"{list(cfg.DATASETS.TEST)}."
            )
        results: Dict[str, Any] = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            data_loader = cls.build_test_loader(cfg, dataset_name)
            if evaluators is not None:
                evaluator = evaluators[idx]
            else:
                try:
                    evaluator = cls.build_evaluator(cfg, dataset_name)
                except NotImplementedError:
                    logger.warning(
                        "DefaultTrainer.test needs evaluators: pass `evaluators=` "
                        "or override `build_evaluator` in your Trainer."
                    )
                    results[dataset_name] = {}
                    continue
            results_i = inference_on_dataset(model, data_loader, evaluator)
            results[dataset_name] = results_i
            if comm.is_main_process():
                if not isinstance(results_i, dict):
                    raise TypeError(
                        f"The evaluator of {dataset_name} must return a dict on the main process, "
                        f"got {results_i!r}."
                    )
                logger.info("Evaluation results for %s in csv format:", dataset_name)
                print_csv_format(results_i)
        if len(results) == 1:
            results = list(results.values())[0]
        return results

    @staticmethod
    def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
        """Rescale a config written for ``SOLVER.REFERENCE_WORLD_SIZE`` workers to
        ``num_workers`` workers, keeping the per-worker batch size.

        With ``scale = num_workers / REFERENCE_WORLD_SIZE``: IMS_PER_BATCH and BASE_LR are
        multiplied by ``scale``; MAX_ITER, WARMUP_ITERS, STEPS, TEST.EVAL_PERIOD and
        CHECKPOINT_PERIOD divided by it (rounded); REFERENCE_WORLD_SIZE becomes
        ``num_workers``. E.g. 16 images, LR 0.1, 5000 iterations on a reference of 8
        workers become 32 images, LR 0.2, 2500 iterations on 16 workers.

        Returns:
            ``cfg`` itself when REFERENCE_WORLD_SIZE is 0 or equals ``num_workers``,
            otherwise a new config (frozen if ``cfg`` was).

        Raises:
            ValueError: IMS_PER_BATCH is not divisible by REFERENCE_WORLD_SIZE.
        """
        old_world_size = cfg.SOLVER.REFERENCE_WORLD_SIZE
        if old_world_size == 0 or old_world_size == num_workers:
            return cfg
        if cfg.SOLVER.IMS_PER_BATCH % old_world_size != 0:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
                f"SOLVER.REFERENCE_WORLD_SIZE={old_world_size}."
            )
        cfg = cfg.clone()
        frozen = cfg.is_frozen()
        cfg.defrost()
        scale = num_workers / old_world_size
        solver = cfg.SOLVER
        solver.IMS_PER_BATCH = int(round(solver.IMS_PER_BATCH * scale))
        solver.BASE_LR = solver.BASE_LR * scale
        solver.MAX_ITER = int(round(solver.MAX_ITER / scale))
        solver.WARMUP_ITERS = int(round(solver.WARMUP_ITERS / scale))
        solver.STEPS = tuple(int(round(s / scale)) for s in solver.STEPS)
        cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
        solver.CHECKPOINT_PERIOD = int(round(solver.CHECKPOINT_PERIOD / scale))
        solver.REFERENCE_WORLD_SIZE = num_workers
        logging.getLogger(__name__).info(
            "Auto-scaling the config to batch_size=%d, learning_rate=%s, max_iter=%d, warmup=%d.",
            solver.IMS_PER_BATCH,
            solver.BASE_LR,
            solver.MAX_ITER,
            solver.WARMUP_ITERS,
        )
        if frozen:
            cfg.freeze()
        return cfg

    # model, data_loader and optimizer live on the inner trainer.
    @property
    def model(self) -> torch.nn.Module:
        return self._trainer.model

    @model.setter
    def model(self, value: torch.nn.Module) -> None:
        self._trainer.model = value

    @property
    def data_loader(self):
        return self._trainer.data_loader

    @data_loader.setter
    def data_loader(self, value) -> None:
        self._trainer.data_loader = value

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._trainer.optimizer

    @optimizer.setter
    def optimizer(self, value: torch.optim.Optimizer) -> None:
        self._trainer.optimizer = value
