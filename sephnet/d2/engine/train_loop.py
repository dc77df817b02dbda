"""The hook-driven training loop (detectron2.engine.train_loop).

:class:`TrainerBase` owns the iteration counter and calls its hooks around each step::

    hook.before_train()                  # every hook, in registration order
    for iter in range(start_iter, max_iter):
        hook.before_step()
        trainer.run_step()               # SimpleTrainer: data -> losses -> backward -> step
            (hook.after_backward() runs inside run_step, between backward and step)
        hook.after_step()
    iter += 1
    hook.after_train()

:class:`SimpleTrainer` implements one SGD step on one data source; :class:`AMPTrainer`
does the same under automatic mixed precision.

Exact resume (an addition over detectron2 v0.6): :meth:`SimpleTrainer.state_dict` also
holds the random-number-generator states and the number of batches consumed, so that a
run restored from a checkpoint continues bit-for-bit as if it had never stopped (see
:class:`SimpleTrainer`). Checkpoints written by detectron2 (without these keys) still
load; training then continues from the iteration only, as in detectron2.
"""
import logging
import random
import time
import weakref
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from sephnet.d2.utils import comm
from sephnet.d2.utils.events import EventStorage, get_event_storage

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "AMPTrainer"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks; every method is a no-op by default.

    A registered hook reaches its trainer (model, iteration, storage, cfg for
    :class:`DefaultTrainer`) through ``self.trainer``, a weak proxy set by
    :meth:`TrainerBase.register_hooks`. ``before_step`` should be cheap; put slow work in
    ``after_step`` so that timing hooks measure the step itself.
    """

    trainer: "TrainerBase" = None

    def before_train(self) -> None:
        """Called once, before the first iteration."""

    def after_train(self) -> None:
        """Called once, after the last iteration (also when training raised)."""

    def before_step(self) -> None:
        """Called before every iteration."""

    def after_backward(self) -> None:
        """Called inside ``run_step`` after the backward pass, before the optimizer step."""

    def after_step(self) -> None:
        """Called after every iteration."""

    def state_dict(self) -> Dict[str, Any]:
        """State to checkpoint. Stateless hooks return ``{}``; a hook returning state must
        also implement ``load_state_dict(state)``."""
        return {}


class TrainerBase:
    """An iterative trainer with hooks; subclasses implement :meth:`run_step`.

    Attributes:
        iter: the current iteration (after training: ``max_iter``).
        start_iter: the first iteration of this :meth:`train` call (0 for a fresh run).
        max_iter: training stops before this iteration.
        storage: the :class:`EventStorage` open during :meth:`train`.
    """

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter: int = 0
        self.start_iter: int = 0
        self.max_iter: int
        self.storage: EventStorage

    def register_hooks(self, hooks: List[Optional[HookBase]]) -> None:
        """Append hooks (``None`` entries are skipped); they run in registration order.

        Raises:
            TypeError: an entry is not a :class:`HookBase`.
        """
        hooks = [h for h in hooks if h is not None]
        for h in hooks:
            if not isinstance(h, HookBase):
                raise TypeError(f"register_hooks expects HookBase instances, got {h!r}.")
            # A proxy: the trainer owns its hooks, and a strong back-reference would make
            # a reference cycle that keeps the trainer alive.
            h.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1`` inside a fresh :class:`EventStorage`."""
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                # Leave ``iter`` one past the last step, so after_train sees max_iter.
                self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        # Storage iteration is set here so hooks' before_step can already log to it.
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        """One training iteration; implemented by subclasses."""
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """``{"iteration": iter, "hooks": {hook class qualname: state}}`` ("hooks" only
        when some hook has state; the first hook of each class wins)."""
        ret: Dict[str, Any] = {"iteration": self.iter}
        hooks_state: Dict[str, Any] = {}
        for h in self._hooks:
            state = h.state_dict()
            name = type(h).__qualname__
            if state and name not in hooks_state:
                hooks_state[name] = state
        if hooks_state:
            ret["hooks"] = hooks_state
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore ``iter`` and the states of hooks matched by class qualname.

        Raises:
            KeyError: ``state_dict`` has no ``"iteration"``.
        """
        if "iteration" not in state_dict:
            raise KeyError(
                f"Trainer state has no 'iteration' key (keys: {sorted(state_dict)})."
            )
        self.iter = state_dict["iteration"]
        for name, state in state_dict.get("hooks", {}).items():
            hook = next((h for h in self._hooks if type(h).__qualname__ == name), None)
            if hook is None:
                logger.warning("No registered hook of class '%s'; its saved state is ignored.", name)
            else:
                hook.load_state_dict(state)


def get_rng_states() -> Dict[str, Any]:
    """Snapshot of python ``random``, numpy, torch CPU (and CUDA when present) RNG states.

    Only tensors, numbers, strings, tuples and dicts are used, so the snapshot survives
    ``torch.load(weights_only=True)``.
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    states: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore a snapshot from :func:`get_rng_states`; absent entries are left alone."""
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        np_state = states["numpy"]
        np.random.set_state(
            (
                np_state["name"],
                np_state["keys"].numpy().astype(np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        cuda_states = states["torch_cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning(
                "Checkpoint holds %d CUDA RNG states but %d devices are visible; "
                "CUDA RNG not restored.",
                len(cuda_states),
                torch.cuda.device_count(),
            )


class SimpleTrainer(TrainerBase):
    """One model, one optimizer, one data source; each step is

    ``data = next(loader)`` → ``loss_dict = model(data)`` → ``sum(loss_dict)`` →
    ``zero_grad`` / ``backward`` → ``after_backward`` hooks → metrics → ``optimizer.step()``.

    The model is put into training mode here; everything else (LR schedule,
    checkpointing, logging, evaluation) belongs to hooks.

    Exact resume: data loading and the model's step each run on their own RNG stream
    (global RNG states swapped in and out), each continuing where it stopped in the
    previous step, so RNG use between steps (hooks, evaluation, logging) or by a loader
    starting its workers never changes the training trajectory; the state dict carries
    both streams (``"rng_states"``, ``"data_rng_states"``) and the number of batches
    drawn from the loader (``"data_position"``). The data stream is
    restored on a fresh trainer (whose loader iterator has not yet produced a batch):

    * when the loader is resumable (has ``state_dict``/``load_state_dict``, like the
      core's ``build_detection_train_loader``), from its own state (``"data_loader"``),
      without reading the consumed batches again;
    * otherwise by drawing and discarding ``data_position`` batches from the iterator
      made at construction, which reproduces the stream (worker seeds included) when the
      loader is deterministic given the global seeds.
    """

    def __init__(self, model: torch.nn.Module, data_loader, optimizer: torch.optim.Optimizer):
        """
        Args:
            model: a module mapping one item of ``data_loader`` to a dict of scalar losses
                (or to one scalar loss tensor).
            data_loader: an iterable (usually infinite) of training batches.
            optimizer: the optimizer updating ``model``.
        """
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter = iter(data_loader)
        self._data_position = 0
        self._rng_states: Optional[Dict[str, Any]] = None
        self._data_rng_states: Optional[Dict[str, Any]] = None
        self._data_rng_seed: Optional[int] = None
        self.optimizer = optimizer

    def _next_batch(self) -> Any:
        batch = next(self._data_loader_iter)
        self._data_position += 1
        return batch

    def run_step(self) -> None:
        """One iteration of SGD on the next batch (see the class docstring)."""
        self._check_training_mode()
        start = time.perf_counter()
        data = self._fetch_step_data()
        data_time = time.perf_counter() - start

        loss_dict = self.model(data)
        losses, loss_dict = _total_loss(loss_dict)

        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
        self._end_step_rng()

    def _check_training_mode(self) -> None:
        if not self.model.training:
            raise RuntimeError(
                f"[{type(self).__name__}] the model was switched to eval mode; "
                "run_step needs model.train()."
            )

    def _fetch_step_data(self) -> Any:
        """The step's batch, drawn on the data RNG stream; leaves the step stream active.

        Data loading and the model use two RNG streams, each continuing where it stopped
        in the previous step, so that a loader that draws random numbers in this process
        at unpredictable times (e.g. when it starts its worker processes) cannot shift
        the model's random numbers. The data stream branches off at the first step,
        seeded from the global torch RNG.
        """
        if self._data_rng_states is None:
            self._start_data_stream(int(torch.randint(0, 2**31 - 1, ()).item()))
        step_states = self._rng_states if self._rng_states is not None else get_rng_states()
        set_rng_states(self._data_rng_states)
        data = self._next_batch()
        self._data_rng_states = get_rng_states()
        set_rng_states(step_states)
        return data

    def _start_data_stream(self, seed: int) -> None:
        """Make the data RNG stream the one seeded with ``seed``; global states unchanged."""
        current = get_rng_states()
        _seed_all(seed)
        self._data_rng_seed = seed
        self._data_rng_states = get_rng_states()
        set_rng_states(current)

    def _end_step_rng(self) -> None:
        self._rng_states = get_rng_states()

    def _write_metrics(
        self, loss_dict: Mapping[str, torch.Tensor], data_time: float, prefix: str = ""
    ) -> None:
        SimpleTrainer.write_metrics(loss_dict, data_time, prefix)

    @staticmethod
    def write_metrics(
        loss_dict: Mapping[str, torch.Tensor], data_time: float, prefix: str = ""
    ) -> None:
        """Gather losses and data time from all workers and record them on the main one.

        The main process stores ``data_time`` (max over workers), every loss (mean over
        workers, only when there are several) and ``{prefix}total_loss`` (their sum) in the
        current :class:`EventStorage`.

        Args:
            loss_dict: scalar loss tensors by name.
            data_time: seconds this worker waited for its batch.
            prefix: prepended to ``total_loss``.

        Raises:
            FloatingPointError: the reduced total loss is NaN or infinite; the message
                names the iteration and the loss values.
        """
        metrics = {k: v.detach().cpu().item() for k, v in loss_dict.items()}
        metrics["data_time"] = data_time
        gathered = comm.gather(metrics)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", float(np.max([m.pop("data_time") for m in gathered])))
        reduced = {k: float(np.mean([m[k] for m in gathered])) for k in gathered[0]}
        total = sum(reduced.values())
        if not np.isfinite(total):
            raise FloatingPointError(
                f"Loss became infinite or NaN at iteration={storage.iter}!\nloss_dict = {reduced}"
            )
        storage.put_scalar(f"{prefix}total_loss", total)
        if len(reduced) > 1:
            storage.put_scalars(**reduced)

    def state_dict(self) -> Dict[str, Any]:
        """Base state plus ``"optimizer"``, ``"data_position"``, ``"rng_states"``,
        ``"data_rng_states"``/``"data_rng_seed"`` (after the first step) and, for a
        resumable loader, ``"data_loader"``."""
        ret = super().state_dict()
        ret["optimizer"] = self.optimizer.state_dict()
        ret["data_position"] = self._data_position
        if _is_resumable(self.data_loader):
            ret["data_loader"] = self.data_loader.state_dict()
        ret["rng_states"] = self._rng_states if self._rng_states is not None else get_rng_states()
        if self._data_rng_states is not None:
            ret["data_rng_states"] = self._data_rng_states
            ret["data_rng_seed"] = self._data_rng_seed
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore iteration, hooks, optimizer and (when saved) RNG states and loader position."""
        super().load_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict["optimizer"])
        position = state_dict.get("data_position")
        if "data_loader" in state_dict and _is_resumable(self.data_loader) and self._data_position == 0:
            # The construction-time iterator has not started: it honours the new state.
            self.data_loader.load_state_dict(state_dict["data_loader"])
            self._data_position = int(position or 0)
        elif position is not None:
            seed = state_dict.get("data_rng_seed")
            if seed is not None:
                # Replay the skipped batches on the data stream they were first drawn on,
                # so that items the loader buffered meanwhile are mapped identically.
                self._start_data_stream(int(seed))
                step_states = get_rng_states()
                set_rng_states(self._data_rng_states)
                self._seek_data(int(position))
                set_rng_states(step_states)
            else:
                self._seek_data(int(position))
        if "rng_states" in state_dict:
            self._rng_states = state_dict["rng_states"]
        if "data_rng_states" in state_dict:
            self._data_rng_states = state_dict["data_rng_states"]
            self._data_rng_seed = state_dict.get("data_rng_seed")

    def _seek_data(self, position: int) -> None:
        """Make the next batch the ``position``-th (0-based) of the loader's stream."""
        if position < self._data_position:
            logger.warning(
                "Rewinding the training data from batch %d to %d with a new loader iterator; "
                "the stream is exact only if the loader is deterministic.",
                self._data_position,
                position,
            )
            self._data_loader_iter = iter(self.data_loader)
            self._data_position = 0
        skip = position - self._data_position
        if skip:
            logger.info("Skipping %d already-trained batches of the training data ...", skip)
        for _ in range(skip):
            self._next_batch()


def _seed_all(seed: int) -> None:
    """Seed python ``random``, numpy and torch with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _is_resumable(data_loader: Any) -> bool:
    """Whether the loader can save and restore its own stream position."""
    return callable(getattr(data_loader, "state_dict", None)) and callable(
        getattr(data_loader, "load_state_dict", None)
    )


def _total_loss(loss_dict: Any) -> "tuple[torch.Tensor, Mapping[str, torch.Tensor]]":
    """The scalar to backpropagate and the dict of losses to log."""
    if isinstance(loss_dict, torch.Tensor):
        return loss_dict, {"total_loss": loss_dict}
    return sum(loss_dict.values()), loss_dict


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` under automatic mixed precision.

    On CUDA (as in detectron2): float16 autocast with a ``GradScaler``. On CPU (a core
    addition; detectron2 requires CUDA here): bfloat16 autocast via
    ``torch.autocast("cpu")``; bfloat16 has float32's exponent range, so the default
    scaler there is disabled (a pass-through).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        grad_scaler: Optional["torch.amp.GradScaler"] = None,
    ):
        """
        Args:
            model, data_loader, optimizer: as in :class:`SimpleTrainer`.
            grad_scaler: the gradient scaler; default: an enabled CUDA scaler when CUDA is
                available, else a disabled CPU one.

        Raises:
            ValueError: ``model`` is a ``DataParallel`` or a multi-device DDP module.
        """
        unsupported = "AMPTrainer does not support single-process multi-device training."
        if isinstance(model, DataParallel) or (
            isinstance(model, DistributedDataParallel)
            and model.device_ids
            and len(model.device_ids) > 1
        ):
            raise ValueError(unsupported)
        super().__init__(model, data_loader, optimizer)
        self._device_type = "cuda" if torch.cuda.is_available() else "cpu"
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(
                self._device_type, enabled=self._device_type == "cuda"
            )
        self.grad_scaler = grad_scaler

    def run_step(self) -> None:
        """One mixed-precision iteration (forward under autocast, scaled backward)."""
        self._check_training_mode()
        start = time.perf_counter()
        data = self._fetch_step_data()
        data_time = time.perf_counter() - start

        dtype = torch.float16 if self._device_type == "cuda" else torch.bfloat16
        with torch.autocast(self._device_type, dtype=dtype):
            losses, loss_dict = _total_loss(self.model(data))

        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self._end_step_rng()

    def state_dict(self) -> Dict[str, Any]:
        """:meth:`SimpleTrainer.state_dict` plus ``"grad_scaler"``."""
        ret = super().state_dict()
        ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
