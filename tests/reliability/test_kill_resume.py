"""Fault injection: real ``train_net.py`` processes SIGKILLed during a step, while writing a
checkpoint, between a checkpoint and its ``last_checkpoint`` tag, during evaluation, while writing
``model_final`` and at a random moment, each restarted with ``--resume``, end with the same final
weights (bit for bit) and the same final evaluation as one uninterrupted run.

Tiny setup (CPU, one thread, NUM_WORKERS 0, 64-80 px images, 6 iterations, checkpoints every 2,
an evaluation at iteration 4 and at the end); each process takes ~10 s on a free core. After the
evaluation kill the newest checkpoint is also truncated on disk, so the next --resume must fall
back to the one before and say so.
"""
import json
import os
import random
import signal
import subprocess
import sys
from typing import Dict, List, Optional

import pytest
import torch

from sephnet.backend import BACKEND
from sephnet.data import ShapesParams, generate_shapes

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIG = os.path.join(REPO, "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml")
OVERRIDES = [
    "DATASETS.TRAIN", "('reliability_shapes_train',)",
    "DATASETS.TEST", "('reliability_shapes_val',)",
    "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "6",
    "SOLVER.CHECKPOINT_PERIOD", "2",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.STEPS", "(4,)",
    "TEST.EVAL_PERIOD", "4",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "80",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "80",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
    "TEST.DETECTIONS_PER_IMAGE", "10",
]

# The kill points, in the order one run meets them (see kill_switch_train_net.py): each
# killed process is restarted with --resume and meets the next one.
KILLS = [
    "step:2",  # mid-step; resumes from model_0000001
    "save:model_0000003",  # half-written checkpoint; resumes from model_0000001 again
    "tag:model_0000003",  # complete file, last_checkpoint not yet updated; resumes from 1
    "eval:1",  # inside the iteration-4 evaluation; resumes from model_0000003
    "save:model_final",  # resumes from model_0000005 with no step left to run
]


def _run(data: str, out: str, kill: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, RELIABILITY_DATA=data, RELIABILITY_KILL=kill, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(HERE, "kill_switch_train_net.py"), "--config-file", CONFIG,
           "--resume", "OUTPUT_DIR", out, *OVERRIDES]
    proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=600)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"{kill or 'run'} failed:\n{proc.stdout.decode()[-4000:]}")
    return proc


def _final_weights(out: str) -> Dict[str, torch.Tensor]:
    return torch.load(os.path.join(out, "model_final.pth"), map_location="cpu")["model"]


def _final_evaluation(out: str) -> Dict[str, float]:
    """The last evaluation record of metrics.json (bbox/segm keys)."""
    with open(os.path.join(out, "metrics.json")) as f:
        records: List[dict] = [json.loads(line) for line in f if line.strip()]
    evals = [r for r in records if any(k.startswith("bbox/") for k in r)]
    return {k: v for k, v in evals[-1].items() if k.startswith(("bbox/", "segm/"))}


def _detections(out: str) -> Optional[list]:
    with open(os.path.join(out, "inference", "coco_instances_results.json")) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "core", reason="bit-identical --resume needs the core's resumable "
                    "data-loader and RNG state in checkpoints (detectron2 v0.6 restarts its loader)")
def test_sigkilled_runs_resume_to_identical_weights_and_metrics(tmp_path):
    data = str(tmp_path / "data")
    generate_shapes(data, ShapesParams(num_train=4, num_val=2, image_sizes=((64, 64), (64, 80)),
                                       max_objects=2, min_extent=12, max_extent=30))
    reference = str(tmp_path / "reference")
    assert _run(data, reference).returncode == 0

    killed = str(tmp_path / "killed")
    for kill in KILLS:
        proc = _run(data, killed, kill)
        assert proc.returncode == -signal.SIGKILL, f"{kill} was never reached"
        assert not os.path.exists(os.path.join(killed, "model_final.pth"))
        if kill == "save:model_final":
            # the previous run's newest checkpoint was truncated: this one fell back
            log = proc.stdout.decode()
            assert "Resumed from" in log and "model_0000001.pth" in log, log[-3000:]
        if kill.startswith("eval:"):
            with open(os.path.join(killed, "last_checkpoint")) as f:
                newest = os.path.join(killed, f.read().strip())
            assert newest.endswith("model_0000003.pth")
            with open(newest, "r+b") as f:
                f.truncate(os.path.getsize(newest) // 3)
    # One more at a random moment (the process may also finish first: then nothing was killed).
    delay = random.Random(os.getpid()).uniform(2.0, 12.0)
    _run(data, str(tmp_path / "random"), f"timer:{delay:.2f}")
    for out in (killed, str(tmp_path / "random")):
        assert _run(data, out).returncode == 0
        want, got = _final_weights(reference), _final_weights(out)
        assert want.keys() == got.keys()
        different = [k for k in want if not torch.equal(want[k], got[k])]
        assert not different, f"{out}: weights differ from the uninterrupted run: {different[:5]}"
        assert _final_evaluation(out) == _final_evaluation(reference)
        assert _detections(out) == _detections(reference)
