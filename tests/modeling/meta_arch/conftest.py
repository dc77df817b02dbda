"""Full-model tests run single-threaded: on the shared 2-core machine, intra-op threads of
tiny convs oversubscribe the CPU and make a train step ~50x slower."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
