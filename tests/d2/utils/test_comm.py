"""comm helpers in a single process, and across two gloo processes."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sephnet.d2.utils import comm


def test_single_process_world():
    assert comm.get_world_size() == 1
    assert comm.get_rank() == 0
    assert comm.get_local_rank() == 0
    assert comm.get_local_size() == 1
    assert comm.is_main_process()
    comm.synchronize()  # must not block
    payload = {"a": [1, 2], "t": torch.arange(3)}
    assert comm.all_gather(payload) == [payload]
    assert comm.gather(payload) == [payload]
    losses = {"b": torch.tensor(2.0), "a": torch.tensor(1.0)}
    assert comm.reduce_dict(losses) is losses
    seed = comm.shared_random_seed()
    assert isinstance(seed, int) and 0 <= seed < 2**31


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    comm.create_local_process_group(world)
    result = {
        "all_gather": comm.all_gather({"rank": rank, "pad": "x" * (rank * 100)}),
        "gather": comm.gather(rank * 10),
        "local_rank": comm.get_local_rank(),
        "local_size": comm.get_local_size(),
        "reduced": {
            k: float(v) for k, v in comm.reduce_dict({"x": torch.tensor(float(rank + 1))}).items()
        },
        "seed": comm.shared_random_seed(),
    }
    comm.synchronize()
    torch.save(result, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes(tmp_path):
    mp.start_processes(
        _worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    expected = [{"rank": 0, "pad": ""}, {"rank": 1, "pad": "x" * 100}]
    assert r0["all_gather"] == r1["all_gather"] == expected
    assert r0["gather"] == [0, 10] and r1["gather"] == []
    assert (r0["local_rank"], r1["local_rank"]) == (0, 1)
    assert r0["local_size"] == r1["local_size"] == 2
    assert r0["reduced"] == {"x": 1.5}  # (1 + 2) / 2 on rank 0
    assert r0["seed"] == r1["seed"]
