"""TrainingSampler determinism, sharding and resume; InferenceSampler; RepeatFactor."""
import itertools
from unittest import mock

import pytest
import torch

from sephnet.d2.data.samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def _reference_stream(size, seed, n):
    """Independent reference: randperms of one seeded generator, concatenated."""
    g = torch.Generator()
    g.manual_seed(seed)
    out = []
    while len(out) < n:
        out.extend(torch.randperm(size, generator=g).tolist())
    return out[:n]


def test_stream_is_seeded_epochs_of_permutations():
    got = _take(TrainingSampler(7, seed=11), 30)
    assert got == _reference_stream(7, 11, 30)
    assert sorted(got[:7]) == list(range(7)) and sorted(got[7:14]) == list(range(7))
    assert got == _take(TrainingSampler(7, seed=11), 30)
    assert got != _take(TrainingSampler(7, seed=12), 30)
    assert _take(TrainingSampler(4, shuffle=False, seed=0), 9) == [0, 1, 2, 3, 0, 1, 2, 3, 0]


def test_sharding_by_rank_partitions_the_stream():
    full = _reference_stream(9, 5, 40)
    shards = []
    for rank in range(3):
        with mock.patch("sephnet.d2.utils.comm.get_rank", return_value=rank), mock.patch(
            "sephnet.d2.utils.comm.get_world_size", return_value=3
        ):
            shards.append(_take(TrainingSampler(9, seed=5), 10))
    for rank in range(3):
        assert shards[rank] == full[rank::3][:10]


def test_state_round_trip_resumes_the_same_sequence():
    sampler = TrainingSampler(6, seed=3)
    full = _take(sampler, 25)
    state = sampler.state_dict()
    assert state == {"seed": 3, "size": 6, "shuffle": True, "start": 0}
    resumed = TrainingSampler(6, seed=999)
    resumed.load_state_dict(dict(state, start=13))
    assert _take(resumed, 12) == full[13:25]
    assert resumed.state_dict()["seed"] == 3
    with pytest.raises(ValueError, match="size"):
        TrainingSampler(5, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="start"):
        TrainingSampler(6, seed=0).load_state_dict(dict(state, start=-1))


def test_training_sampler_rejects_bad_sizes():
    with pytest.raises(TypeError):
        TrainingSampler(3.0, seed=0)
    with pytest.raises(ValueError):
        TrainingSampler(0, seed=0)


def test_seed_none_draws_a_shared_seed():
    a = TrainingSampler(5)
    b = TrainingSampler(5)
    assert isinstance(a.state_dict()["seed"], int) and a.state_dict()["seed"] != b.state_dict()["seed"]


@pytest.mark.parametrize("size, world", [(10, 3), (2, 4), (7, 1)])
def test_inference_sampler_covers_everything_once(size, world):
    seen = []
    for rank in range(world):
        with mock.patch("sephnet.d2.utils.comm.get_rank", return_value=rank), mock.patch(
            "sephnet.d2.utils.comm.get_world_size", return_value=world
        ):
            shard = list(InferenceSampler(size))
        assert shard == sorted(shard)
        seen.extend(shard)
    assert seen == list(range(size))
    assert len(InferenceSampler(size)) == size  # single process


def test_repeat_factors_and_epoch_counts():
    dicts = [
        {"annotations": [{"category_id": 0}]},
        {"annotations": [{"category_id": 0}, {"category_id": 1}]},
        {"annotations": [{"category_id": 0}]},
        {"annotations": []},
    ]
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.5)
    # f(0) = 3/4 -> 1; f(1) = 1/4 -> sqrt(0.5 / 0.25) = 1.414
    assert factors.dtype == torch.float32
    assert factors.tolist() == pytest.approx([1.0, 2**0.5, 1.0, 1.0])
    sampler = RepeatFactorTrainingSampler(torch.tensor([1.0, 2.0, 0.0]), seed=0)
    epoch = sorted(_take(sampler, 3))
    assert epoch == [0, 1, 1]
