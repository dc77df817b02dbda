"""Index samplers for training and inference (detectron2.data.samplers.distributed_sampler).

Samplers yield dataset indices. They shard by *distributed rank* (each of the
``world_size`` processes gets its own slice) but not by DataLoader worker: they are
meant to run in the main process.
"""
import itertools
import math
from collections import defaultdict
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch.utils.data.sampler import Sampler

from sephnet.d2.utils import comm

__all__ = ["TrainingSampler", "InferenceSampler", "RepeatFactorTrainingSampler"]


class TrainingSampler(Sampler):
    """Infinite stream of indices, shuffled epoch by epoch, sharded by rank.

    The global stream is ``perm_0 + perm_1 + ...`` where ``perm_e`` is
    ``torch.randperm(size)`` drawn from one ``torch.Generator`` seeded with ``seed``
    (or ``range(size)`` repeated when ``shuffle=False``); rank ``r`` of ``W`` yields
    ``stream[r::W]``.

    Resume contract (a core addition over detectron2 v0.6): the sampler itself does not
    know how many of its indices were consumed (DataLoader prefetches). Its state is
    ``{"seed", "size", "shuffle", "start"}``, where ``start`` is the number of this rank's
    indices to skip when the next iteration begins. A consumer that counted ``n`` consumed
    indices restores the stream with ``load_state_dict({**state, "start": n})``; the next
    ``iter()`` then yields exactly what would have followed the ``n``-th index.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None):
        """
        Args:
            size: number of items in the dataset (> 0).
            shuffle: shuffle each epoch, or go through ``range(size)`` in order.
            seed: shuffling seed, identical on all ranks; None draws one shared seed
                (every rank must then construct the sampler, it synchronises).

        Raises:
            TypeError / ValueError: ``size`` is not a positive int.
        """
        if not isinstance(size, int):
            raise TypeError(f"TrainingSampler(size=...) needs an int, got {type(size)}.")
        if size <= 0:
            raise ValueError(f"TrainingSampler(size=...) needs a positive size, got {size}.")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        self._start = 0

    def __iter__(self) -> Iterator[int]:
        first = self._rank + self._start * self._world_size
        yield from itertools.islice(self._infinite_indices(), first, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from range(self._size)

    def state_dict(self) -> Dict[str, Any]:
        """``{"seed", "size", "shuffle", "start"}`` (see the class docstring)."""
        return {"seed": self._seed, "size": self._size, "shuffle": self._shuffle, "start": self._start}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Adopt the seed and start position of ``state``.

        Raises:
            ValueError: ``state`` was made for a different dataset size or shuffle mode,
                or ``start`` is negative.
        """
        for key in ("size", "shuffle"):
            if key in state and state[key] != getattr(self, f"_{key}"):
                raise ValueError(
                    f"TrainingSampler state has {key}={state[key]!r} but this sampler has "
                    f"{key}={getattr(self, f'_{key}')!r}; the dataset changed since it was saved."
                )
        start = int(state.get("start", 0))
        if start < 0:
            raise ValueError(f"TrainingSampler state 'start' must be >= 0; got {start}.")
        self._seed = int(state.get("seed", self._seed))
        self._start = start


class RepeatFactorTrainingSampler(Sampler):
    """Like :class:`TrainingSampler`, but image ``i`` appears ``repeat_factors[i]`` times per
    epoch on average (stochastic rounding of the fractional part), as in LVIS training.
    """

    def __init__(self, repeat_factors: torch.Tensor, *, shuffle: bool = True, seed: Optional[int] = None):
        """
        Args:
            repeat_factors: (N,) float repeat factor of each image.
            shuffle: shuffle each epoch.
            seed: shared seed; None draws one (synchronising all ranks).
        """
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part

    @staticmethod
    def repeat_factors_from_category_frequency(
        dataset_dicts: List[Dict[str, Any]], repeat_thresh: float
    ) -> torch.Tensor:
        """Per-image repeat factor ``max over its categories c of max(1, sqrt(t / f_c))``.

        ``f_c`` is the fraction of images containing category ``c`` and ``t`` is
        ``repeat_thresh``; an image without annotations gets 1.

        Returns:
            (N,) float32 tensor.
        """
        image_count: Dict[int, int] = defaultdict(int)
        for d in dataset_dicts:
            for cat_id in {ann["category_id"] for ann in d["annotations"]}:
                image_count[cat_id] += 1
        num_images = len(dataset_dicts)
        category_rep = {
            cat_id: max(1.0, math.sqrt(repeat_thresh / (count / num_images)))
            for cat_id, count in image_count.items()
        }
        factors = [
            max({category_rep[ann["category_id"]] for ann in d["annotations"]}, default=1.0)
            for d in dataset_dicts
        ]
        return torch.tensor(factors, dtype=torch.float32)

    def _get_epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        """Indices of one epoch, each repeated by its stochastically rounded factor."""
        rands = torch.rand(len(self._frac_part), generator=generator)
        reps = (self._int_part + (rands < self._frac_part).float()).long()
        return torch.repeat_interleave(torch.arange(len(reps)), reps)

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            indices = self._get_epoch_indices(g)
            if self._shuffle:
                yield from indices[torch.randperm(len(indices), generator=g)].tolist()
            else:
                yield from indices.tolist()


class InferenceSampler(Sampler):
    """Every index exactly once across ranks: rank ``r`` gets a contiguous shard.

    The first ``size % world_size`` ranks get one extra item.
    """

    def __init__(self, size: int):
        """
        Args:
            size: number of items in the dataset (> 0).
        """
        if size <= 0:
            raise ValueError(f"InferenceSampler(size=) expects a positive int. Got {size}.")
        self._size = size
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        self._local_indices = self._get_local_indices(size, self._world_size, self._rank)

    @staticmethod
    def _get_local_indices(total_size: int, world_size: int, rank: int) -> range:
        """The contiguous range of indices of ``rank``."""
        base, extra = divmod(total_size, world_size)
        sizes = [base + int(r < extra) for r in range(world_size)]
        begin = sum(sizes[:rank])
        return range(begin, min(begin + sizes[rank], total_size))

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)
