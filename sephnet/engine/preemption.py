"""Stop training cleanly on SIGTERM (cluster preemption) or SIGINT (Ctrl-C).

On the first signal the current iteration finishes (its hooks included), then the trainer's
checkpointer writes ``model_<iter>.pth`` (atomically on the core backend) and tags it in
``last_checkpoint``, the log says where, and the process exits with :data:`EXIT_PREEMPTED`;
``train_net.py --resume`` continues from there. A second signal exits at once (code
128 + signal number), without a checkpoint.

With several processes (``--num-gpus``) every rank stops after the same iteration: the ranks
agree each iteration on whether any of them was signalled. A terminal's Ctrl-C and a
scheduler's SIGTERM reach the whole process group, data-loader workers included: workers
forked during training ignore SIGINT (PyTorch's own SIGTERM handler still ends them), and after
the first signal the main process stops reacting to their deaths (PyTorch's SIGCHLD check
would raise mid-iteration), as the stopping run fetches no more batches.
"""
import logging
import os
import signal
import sys
import threading
from typing import Dict, Optional

import torch

from sephnet.backend import HookBase, comm

__all__ = ["EXIT_PREEMPTED", "PreemptionCheckpoint", "ignore_stop_signals_in_forked_children"]

#: Exit status after a clean stop on a signal (BSD's EX_TEMPFAIL: "try again later").
EXIT_PREEMPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

logger = logging.getLogger(__name__)
_children_ignore = [False]


def _ignore_in_child() -> None:
    if _children_ignore[0]:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


os.register_at_fork(after_in_child=_ignore_in_child)


def ignore_stop_signals_in_forked_children() -> None:
    """From now on, processes forked by this one (data-loader workers) start ignoring SIGTERM and
    SIGINT (PyTorch's workers then install their own SIGTERM handler)."""
    _children_ignore[0] = True


class PreemptionCheckpoint(HookBase):
    """Turn SIGTERM/SIGINT into "finish this iteration, checkpoint, exit 75".

    Put it last among the trainer's hooks, so the signalled iteration completes (evaluation
    and writers included) before the checkpoint is written. Handlers are installed in
    ``before_train`` (main thread only) and the previous ones restored in ``after_train``.
    """

    def __init__(self) -> None:
        self._signum: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self._signum is not None:
            logger.warning(f"Received {name} again: exiting at once, without a checkpoint.")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        self._signum = signum
        self._previous.setdefault(signal.SIGCHLD, signal.signal(signal.SIGCHLD, signal.SIG_DFL))
        logger.warning(
            f"Received {name} during iteration {self.trainer.iter}: finishing it, then saving a "
            f"resumable checkpoint (send {name} again to exit at once)."
        )

    def before_train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def after_train(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _requested(self) -> bool:
        requested = self._signum is not None
        if comm.get_world_size() > 1:
            flag = torch.tensor([int(requested)], device=_comm_device())
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        return requested

    def after_step(self) -> None:
        if not self._requested():
            return
        iteration = self.trainer.iter
        checkpointer = self.trainer.checkpointer
        name = f"model_{iteration:07d}"
        checkpointer.save(name, iteration=iteration)
        comm.synchronize()
        reason = signal.Signals(self._signum).name if self._signum is not None else "another rank's signal"
        logger.warning(
            f"Stopped by {reason} after iteration {iteration}: resumable checkpoint "
            f"{os.path.join(checkpointer.save_dir, name + '.pth')}; continue with --resume "
            f"(exit code {EXIT_PREEMPTED})."
        )
        raise SystemExit(EXIT_PREEMPTED)


def _comm_device() -> torch.device:
    backend = torch.distributed.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
