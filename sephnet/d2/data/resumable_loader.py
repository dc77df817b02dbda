"""The training loader with exact resume (a core addition over detectron2 v0.6).

:func:`sephnet.d2.data.build_detection_train_loader` returns a
:class:`ResumableTrainLoader` for map-style datasets. It yields the same batches as
detectron2's loader would in structure (lists of ``total_batch_size / world_size``
mapped items, aspect-ratio grouped when asked: landscape ``w > h`` vs the rest, a
bucket emitted as soon as it is full), and in addition:

* **Per-item randomness is a function of the stream position.** Before mapping the
  ``p``-th item of this rank's stream, python's ``random``, numpy's and torch's global
  RNGs are seeded from ``(augmentation_seed, rank, p)`` (the previous RNG states are
  restored afterwards when mapping runs in the main process). The batches therefore do
  not depend on ``num_workers`` or on where the run was interrupted.
* **Consumer-side position.** Only batches handed to the consumer count (DataLoader
  prefetching does not). The state is ``{"batches", "next_item", "pending",
  "augmentation_seed", "sampler"}``: batches consumed, the stream position of the next
  item, the ``(position, index)`` items waiting in the aspect-ratio buckets, the seed,
  and the sampler's own state (its seed) when it has ``state_dict``.

Resume contract for a trainer:

1. ``state = loader.state_dict()`` when checkpointing (after ``k`` batches consumed),
   and later ``loader.load_state_dict(state)`` **before** the first ``next()`` of a new
   iterator: the iterator continues with batch ``k`` exactly (pending bucket items are
   re-mapped with their original seeds).
2. Without a saved state, ``loader.set_position(k)`` seeks to batch ``k`` of the stream
   (same seeds as the original run are needed, e.g. a fixed ``cfg.SEED``). It replays
   the bucket assignment from the dataset dicts' "width"/"height" (cheap, no image is
   read) when every dict has them or grouping is off; otherwise it maps and discards
   the first ``k`` batches.

One iterator at a time: a running iterator updates the loader's position.
Limitation: when the mapper returns None, :class:`MapDataset` retries another index with
its own RNG, whose state is per process, so streams with rejected items are exact only
with the same ``num_workers`` and no interruption.
"""
import copy
import itertools
import logging
import operator
import random
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.utils.data as torchdata

from sephnet.d2.utils import comm

__all__ = ["ResumableTrainLoader"]

logger = logging.getLogger(__name__)


class _Slot(list):
    """A one-item "batch" of DataLoader indices, carrying the item's stream position."""

    def __init__(self, index: int, position: int):
        super().__init__([index])
        self.position = position


def _item_seed(base: int, rank: int, position: int) -> int:
    """A 32-bit seed for the item at ``position`` of ``rank``'s stream."""
    return int(np.random.SeedSequence([base, rank, position]).generate_state(1)[0])


def _seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _PositionSeededDataset(torchdata.Dataset):
    """Map-style dataset whose ``__getitems__`` seeds the RNGs from the slot's position.

    Returns ``[(position, index, item)]`` for a :class:`_Slot`.
    """

    def __init__(self, dataset: torchdata.Dataset, seed: int, rank: int):
        self.dataset = dataset
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> Any:
        return self.dataset[idx]

    def __getitems__(self, slot: _Slot) -> List[Tuple[int, int, Any]]:
        return [(slot.position, slot[0], self.load(slot[0], slot.position))]

    def load(self, index: int, position: int) -> Any:
        """Map item ``index`` with the RNGs seeded for stream ``position``."""
        in_main_process = torchdata.get_worker_info() is None
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if in_main_process else None
        _seed_globals(_item_seed(self.seed, self.rank, position))
        try:
            return self.dataset[index]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


class _Slots:
    """Iterable of :class:`_Slot` for the sampler's stream, starting at ``start``."""

    def __init__(self, sampler: torchdata.Sampler, start: int):
        self.sampler = sampler
        self.start = start

    def __iter__(self) -> Iterator[_Slot]:
        for position, index in enumerate(_indices_from(self.sampler, self.start), self.start):
            yield _Slot(int(index), position)


def _indices_from(sampler: torchdata.Sampler, start: int) -> Iterator[int]:
    """The sampler's indices from position ``start`` on (seeking cheaply when it can)."""
    if start == 0:
        return iter(sampler)
    if hasattr(sampler, "state_dict") and hasattr(sampler, "load_state_dict"):
        state = sampler.state_dict()
        if "start" in state:
            seeker = copy.copy(sampler)
            seeker.load_state_dict({**state, "start": state["start"] + start})
            return iter(seeker)
    return itertools.islice(iter(sampler), start, None)


class ResumableTrainLoader:
    """Infinite training loader over a map-style dataset with exact resume (see module doc).

    Each ``next()`` returns ``collate_fn(list of batch_size mapped items)``.
    """

    def __init__(
        self,
        dataset: torchdata.Dataset,
        sampler: torchdata.Sampler,
        batch_size: int,
        *,
        aspect_ratio_grouping: bool,
        num_workers: int,
        collate_fn: Callable[[List[Any]], Any],
        worker_init_fn: Optional[Callable[[int], None]] = None,
        group_ids: Optional[Sequence[int]] = None,
        augmentation_seed: Optional[int] = None,
    ):
        """
        Args:
            dataset: map-style dataset of *mapped* items (e.g. a MapDataset).
            sampler: yields indices of ``dataset`` (usually an infinite TrainingSampler).
            batch_size: items per batch on this rank.
            aspect_ratio_grouping: group by ``item["width"] > item["height"]``.
            num_workers: DataLoader worker processes (0 = map in the main process).
            collate_fn: applied to each list of items in the main process.
            worker_init_fn: run in each worker at start-up.
            group_ids: per dataset index, 0 (landscape) or 1; lets :meth:`set_position`
                replay grouping without mapping. Must agree with the mapped items.
            augmentation_seed: base of the per-item seeds; None draws one shared seed.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive; got {batch_size}.")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.worker_init_fn = worker_init_fn
        self._group_ids = None if group_ids is None else np.asarray(group_ids, dtype=np.int64)
        seed = comm.shared_random_seed() if augmentation_seed is None else augmentation_seed
        self._augmentation_seed = int(seed)
        self._rank = comm.get_rank()
        self._batches = 0
        self._next_item = 0
        self._pending: List[List[Tuple[int, int]]] = [[], []]

    @property
    def batches_consumed(self) -> int:
        """Number of batches handed to consumers so far (the resume position)."""
        return self._batches

    def _bucket_of(self, item: Any) -> int:
        if not self.aspect_ratio_grouping:
            return 0
        return 0 if item["width"] > item["height"] else 1

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing (no worker) starts before the first next(), so a
        # load_state_dict() between iter() and next() is honoured.
        source = _PositionSeededDataset(self.dataset, self._augmentation_seed, self._rank)
        buckets: List[List[Tuple[int, int, Any]]] = [
            [(pos, idx, source.load(idx, pos)) for pos, idx in bucket] for bucket in self._pending
        ]
        loader = torchdata.DataLoader(
            source,
            batch_sampler=_Slots(self.sampler, self._next_item),
            num_workers=self.num_workers,
            collate_fn=operator.itemgetter(0),
            worker_init_fn=self.worker_init_fn,
        )
        for position, index, item in loader:
            bucket = buckets[self._bucket_of(item)]
            bucket.append((position, index, item))
            self._next_item = position + 1
            if len(bucket) == self.batch_size:
                batch = [entry[2] for entry in bucket]
                del bucket[:]
                self._pending = [[(p, i) for p, i, _ in b] for b in buckets]
                self._batches += 1
                yield self.collate_fn(batch)
            else:
                self._pending = [[(p, i) for p, i, _ in b] for b in buckets]

    def state_dict(self) -> Dict[str, Any]:
        """The consumer-side position and seeds (see the module docstring)."""
        state = {
            "batches": self._batches,
            "next_item": self._next_item,
            "pending": [list(map(list, b)) for b in self._pending],
            "augmentation_seed": self._augmentation_seed,
        }
        if hasattr(self.sampler, "state_dict"):
            state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue, on the next ``iter()``, exactly after the state's last batch.

        Raises:
            KeyError: ``state`` lacks a required key.
        """
        missing = [k for k in ("batches", "next_item", "pending", "augmentation_seed") if k not in state]
        if missing:
            raise KeyError(f"Train loader state lacks {missing}; got keys {sorted(state)}.")
        if "sampler" in state and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])
        self._batches = int(state["batches"])
        self._next_item = int(state["next_item"])
        self._pending = [[(int(p), int(i)) for p, i in b] for b in state["pending"]]
        self._augmentation_seed = int(state["augmentation_seed"])

    def set_position(self, batches: int) -> None:
        """Make the next iterator start at batch ``batches`` of the stream (0-based).

        Keeps the current seeds. Replays the bucket assignment from ``group_ids`` when
        available (or when grouping is off); otherwise maps and discards batches.
        """
        if batches < 0:
            raise ValueError(f"set_position needs batches >= 0; got {batches}.")
        self._batches, self._next_item, self._pending = 0, 0, [[], []]
        if batches == 0:
            return
        if not self.aspect_ratio_grouping or self._group_ids is not None:
            self._replay(batches)
            return
        logger.info("Seeking the training data to batch %d by loading the batches before it ...", batches)
        for _ in itertools.islice(iter(self), batches):
            pass

    def _replay(self, batches: int) -> None:
        buckets: List[List[Tuple[int, int]]] = [[], []]
        done = 0
        for position, index in enumerate(iter(self.sampler)):
            group = int(self._group_ids[index]) if self.aspect_ratio_grouping else 0
            bucket = buckets[group]
            bucket.append((position, int(index)))
            if len(bucket) == self.batch_size:
                del bucket[:]
                done += 1
                if done == batches:
                    self._batches, self._next_item, self._pending = done, position + 1, buckets
                    return
        raise ValueError(f"The sampler ended before batch {batches}; cannot seek there.")
