"""launch(): single process runs inline; two CPU processes train with gloo and average grads."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from sephnet.d2.engine import launch
from sephnet.d2.engine.launch import _find_free_port

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import nn
    from sephnet.d2.engine import HookBase, SimpleTrainer, launch
    from sephnet.d2.engine.defaults import create_ddp_model
    from sephnet.d2.utils import comm


    class LossModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(1, 1, bias=False)

        def forward(self, x):
            return {"loss": self.fc(x).sum()}


    class GradProbe(HookBase):
        def __init__(self):
            self.grads = []

        def after_backward(self):
            self.grads.append(self.trainer.model.module.fc.weight.grad.item())


    def main(out_dir):
        rank = comm.get_rank()
        model = LossModel()
        with torch.no_grad():
            model.fc.weight.fill_(1.0)
        model = create_ddp_model(model, broadcast_buffers=False)

        def data():
            while True:
                yield torch.full((1, 1), float(rank + 1))  # d(loss)/dw = rank + 1

        trainer = SimpleTrainer(model, data(), torch.optim.SGD(model.parameters(), lr=0.1))
        probe = GradProbe()
        trainer.register_hooks([probe])
        trainer.train(0, 3)
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"rank": rank, "world": comm.get_world_size(),
                       "local_rank": comm.get_local_rank(), "grads": probe.grads,
                       "weight": model.module.fc.weight.item()}, f)


    if __name__ == "__main__":
        launch(main, 2, dist_url="auto", args=(sys.argv[1],))
    """
)


@pytest.mark.slow  # subprocesses: over 10 s on 2 cores
def test_two_cpu_processes_average_gradients(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world"], r["local_rank"]) for r in results] == [(0, 2, 0), (1, 2, 1)]
    for r in results:
        # Mean of the per-rank gradients 1 and 2, every step.
        assert r["grads"] == pytest.approx([1.5, 1.5, 1.5])
        assert r["weight"] == pytest.approx(1.0 - 3 * 0.1 * 1.5)


def test_single_process_runs_inline_and_bad_arguments():
    seen = []
    launch(lambda a, b: seen.append((a, b)), 1, args=(1, 2))
    assert seen == [(1, 2)]
    with pytest.raises(ValueError, match="auto"):
        launch(print, 2, num_machines=2, machine_rank=0, dist_url="auto")
    with pytest.raises(ValueError, match="machine_rank"):
        launch(print, 1, num_machines=2, machine_rank=2)
    with pytest.raises(ValueError, match=">= 1"):
        launch(print, 0)
    assert 0 < _find_free_port() < 65536
