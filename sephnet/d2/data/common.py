"""Dataset wrappers used by the loaders (detectron2.data.common)."""
import copy
import itertools
import logging
import pickle
import random
from typing import Any, Callable, Iterable, Iterator, List

import numpy as np
import torch.utils.data as data
from torch.utils.data.sampler import Sampler

__all__ = ["MapDataset", "DatasetFromList", "AspectRatioGroupedDataset", "ToIterableDataset"]

logger = logging.getLogger(__name__)


def _shard_iterator_dataloader_worker(iterable: Iterable) -> Iterator:
    """Inside DataLoader worker ``i`` of ``n``, keep items ``i, i + n, ...``."""
    worker_info = data.get_worker_info()
    if worker_info is None or worker_info.num_workers == 1:
        yield from iterable
    else:
        yield from itertools.islice(iterable, worker_info.id, None, worker_info.num_workers)


class _MapIterableDataset(data.IterableDataset):
    """``map_func`` over an iterable dataset, skipping items it maps to None."""

    def __init__(self, dataset: data.IterableDataset, map_func: Callable[[Any], Any]):
        self._dataset = dataset
        self._map_func = map_func

    def __len__(self) -> int:
        return len(self._dataset)

    def __iter__(self) -> Iterator:
        for item in map(self._map_func, self._dataset):
            if item is not None:
                yield item


class MapDataset(data.Dataset):
    """Apply ``map_func`` to the items of a dataset.

    ``map_func`` may return None to reject an item (e.g. a broken image). For a map-style
    dataset another index is then tried, drawn from the indices not known to fail with a
    ``random.Random(42)`` of this object, with a warning from the third failed try of the
    same request on. For an iterable dataset the item is skipped (the result is then an
    iterable dataset too).
    """

    def __new__(cls, dataset, map_func):
        if isinstance(dataset, data.IterableDataset):
            return _MapIterableDataset(dataset, map_func)
        return super().__new__(cls)

    def __init__(self, dataset: data.Dataset, map_func: Callable[[Any], Any]):
        """
        Args:
            dataset: a map-style or iterable dataset.
            map_func: item -> mapped item, or None to reject the item.
        """
        self._dataset = dataset
        self._map_func = map_func
        self._rng = random.Random(42)
        self._fallback_candidates = set(range(len(dataset)))

    def __getnewargs__(self):
        return self._dataset, self._map_func

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        cur_idx = int(idx)
        retries = 0
        while True:
            result = self._map_func(self._dataset[cur_idx])
            if result is not None:
                self._fallback_candidates.add(cur_idx)
                return result
            retries += 1
            self._fallback_candidates.discard(cur_idx)
            if not self._fallback_candidates:
                raise RuntimeError(
                    f"The mapper returned None for every index tried (request idx={idx}); "
                    "no item of the dataset can be mapped."
                )
            cur_idx = self._rng.sample(sorted(self._fallback_candidates), k=1)[0]
            if retries >= 3:
                logger.warning(
                    "Failed to apply `_map_func` for idx: %s, retry count: %d", idx, retries
                )


class DatasetFromList(data.Dataset):
    """A list as a map-style dataset.

    With ``serialize=True`` (default) the items are pickled into one numpy byte buffer,
    so forked DataLoader workers share the memory instead of copying Python objects;
    every access then returns a fresh copy. With ``serialize=False`` items are
    deep-copied on access if ``copy`` is True.
    """

    def __init__(self, lst: list, copy: bool = True, serialize: bool = True):
        self._lst = lst
        self._copy = copy
        self._serialize = serialize
        if serialize:
            logger.info("Serializing %d elements to byte tensors and concatenating them all ...", len(lst))
            chunks = [np.frombuffer(pickle.dumps(x, protocol=-1), dtype=np.uint8) for x in lst]
            self._addr = np.cumsum(np.asarray([len(c) for c in chunks], dtype=np.int64))
            self._lst = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
            logger.info("Serialized dataset takes %.2f MiB", len(self._lst) / 1024**2)

    def __len__(self) -> int:
        return len(self._addr) if self._serialize else len(self._lst)

    def __getitem__(self, idx: int) -> Any:
        if self._serialize:
            start = 0 if idx == 0 else self._addr[idx - 1].item()
            end = self._addr[idx].item()
            return pickle.loads(memoryview(self._lst[start:end]))
        if self._copy:
            return copy.deepcopy(self._lst[idx])
        return self._lst[idx]


class ToIterableDataset(data.IterableDataset):
    """A map-style dataset read in the order of a sampler, as an iterable dataset.

    With ``shard_sampler`` each DataLoader worker keeps every ``num_workers``-th index,
    so the workers together produce the sampler's sequence once.
    """

    def __init__(self, dataset: data.Dataset, sampler: Sampler, shard_sampler: bool = True):
        if isinstance(dataset, data.IterableDataset):
            raise TypeError("ToIterableDataset needs a map-style dataset; got an IterableDataset.")
        if not isinstance(sampler, Sampler):
            raise TypeError(f"ToIterableDataset needs a torch Sampler; got {type(sampler).__name__}.")
        self.dataset = dataset
        self.sampler = sampler
        self.shard_sampler = shard_sampler

    def __iter__(self) -> Iterator:
        indices = _shard_iterator_dataloader_worker(self.sampler) if self.shard_sampler else self.sampler
        for idx in indices:
            yield self.dataset[idx]

    def __len__(self) -> int:
        return len(self.sampler)


class AspectRatioGroupedDataset(data.IterableDataset):
    """Batch items of similar aspect ratio: landscape (w > h) and the rest separately.

    Items (dicts with "width" and "height") go into one of two buckets; a bucket is
    emitted as a list as soon as it holds ``batch_size`` items. The output is therefore
    a deterministic function of the input sequence.
    """

    def __init__(self, dataset: Iterable, batch_size: int):
        """
        Args:
            dataset: an iterable of dicts with "width" and "height".
            batch_size: items per emitted list.
        """
        self.dataset = dataset
        self.batch_size = batch_size
        self._buckets: List[list] = [[] for _ in range(2)]

    def __iter__(self) -> Iterator[list]:
        for d in self.dataset:
            bucket = self._buckets[0 if d["width"] > d["height"] else 1]
            bucket.append(d)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]
