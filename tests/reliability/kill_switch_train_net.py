"""Run ``train_net.py`` (the real script, via :mod:`runpy`) on a tiny registered shapes dataset,
SIGKILLing the process at one chosen moment.

Used by ``test_kill_resume.py`` as a subprocess: ``python kill_switch_train_net.py <train_net
args>``. Environment:

- ``RELIABILITY_DATA``: a folder made by :func:`sephnet.data.generate_shapes`; its splits are
  registered as ``reliability_shapes_train`` / ``reliability_shapes_val``.
- ``RELIABILITY_KILL`` (optional) ``<moment>:<arg>``, the process kills itself with SIGKILL:

  - ``step:<i>``: inside step ``i``, after the backward pass and before the optimizer update;
  - ``save:<name>``: while writing ``<name>.pth``, after half of its bytes reached the disk;
  - ``tag:<name>``: after ``<name>.pth`` is complete, before ``last_checkpoint`` names it;
  - ``eval:<k>``: inside the ``k``-th batch (1-based, counted over the run) the evaluator
    processes;
  - ``timer:<seconds>``: whatever the process is doing that many seconds after it started;
  - ``signal:<i>:<NAME>[:<n>]``: as step ``i`` starts (``before_step``; detectron2 v0.6 has no
    ``after_backward``) the process sends itself signal NAME (e.g. SIGTERM) ``n`` times (default
    1) instead of SIGKILL.
"""
import io
import os
import runpy
import signal
import sys
import threading
import time
from typing import Any, Callable

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _register_data(root: str) -> None:
    from sephnet.backend import DatasetCatalog, register_coco_instances

    for split in ("train", "val"):
        name = f"reliability_shapes_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(
                name, {}, os.path.join(root, "annotations", f"instances_{split}.json"),
                os.path.join(root, split),
            )


def _arm_step(iteration: int) -> None:
    from sephnet.backend import DefaultTrainer, HookBase

    class _KillInStep(HookBase):
        def after_backward(self) -> None:
            if self.trainer.iter == iteration:
                _die()

    build_hooks = DefaultTrainer.build_hooks

    def patched(self) -> list:
        return build_hooks(self) + [_KillInStep()]

    DefaultTrainer.build_hooks = patched


def _arm_signal(spec: str) -> None:
    from sephnet.backend import DefaultTrainer, HookBase

    iteration, name, *times = spec.split(":")

    class _SignalInStep(HookBase):
        def before_step(self) -> None:
            if self.trainer.iter == int(iteration):
                for _ in range(int(times[0]) if times else 1):
                    os.kill(os.getpid(), getattr(signal, name))

    build_hooks = DefaultTrainer.build_hooks

    def patched(self) -> list:
        return build_hooks(self) + [_SignalInStep()]

    DefaultTrainer.build_hooks = patched


def _arm_save(name: str) -> None:
    real_save: Callable[..., Any] = torch.save

    def dying_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        target = getattr(f, "name", f if isinstance(f, str) else "")
        if os.path.basename(str(target)).startswith(f"{name}.pth"):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _die()
        real_save(obj, f, *args, **kwargs)

    torch.save = dying_save


def _arm_tag(name: str) -> None:
    from sephnet.backend import DetectionCheckpointer

    tag = DetectionCheckpointer.tag_last_checkpoint

    def dying_tag(self, basename: str) -> None:
        if basename == f"{name}.pth":
            _die()
        tag(self, basename)

    DetectionCheckpointer.tag_last_checkpoint = dying_tag


def _arm_eval(batch: int) -> None:
    from sephnet.backend import COCOEvaluator

    process = COCOEvaluator.process
    seen = [0]

    def dying_process(self, inputs: Any, outputs: Any) -> None:
        seen[0] += 1
        if seen[0] == batch:
            _die()
        process(self, inputs, outputs)

    COCOEvaluator.process = dying_process


def _arm_timer(seconds: float) -> None:
    deadline = time.monotonic() + seconds

    def watch() -> None:
        time.sleep(max(0.0, deadline - time.monotonic()))
        _die()

    threading.Thread(target=watch, daemon=True).start()


_ARMS = {"step": lambda a: _arm_step(int(a)), "save": _arm_save, "tag": _arm_tag,
         "eval": lambda a: _arm_eval(int(a)), "timer": lambda a: _arm_timer(float(a)), "signal": _arm_signal}


def main() -> None:
    sys.path.insert(0, REPO)
    torch.set_num_threads(1)
    _register_data(os.environ["RELIABILITY_DATA"])
    spec = os.environ.get("RELIABILITY_KILL", "")
    if spec:
        moment, _, arg = spec.partition(":")
        _ARMS[moment](arg)
    sys.argv = [os.path.join(REPO, "train_net.py")] + sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
