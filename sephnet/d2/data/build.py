"""Dataset-dict collection and data loaders for training and testing (detectron2.data.build)."""
import itertools
import logging
import operator
import pickle
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.utils.data as torchdata
from tabulate import tabulate

from sephnet.d2.config import configurable
from sephnet.d2.structures import BoxMode
from sephnet.d2.utils.comm import get_world_size
from sephnet.d2.utils.env import seed_all_rng
from sephnet.d2.utils.file_io import PathManager

from .catalog import DatasetCatalog, MetadataCatalog
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper
from .detection_utils import check_metadata_consistency
from .resumable_loader import ResumableTrainLoader
from .samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler

__all__ = [
    "build_batch_data_loader",
    "build_detection_train_loader",
    "build_detection_test_loader",
    "get_detection_dataset_dicts",
    "load_proposals_into_dataset",
    "print_instances_class_histogram",
    "trivial_batch_collator",
    "worker_init_reset_seed",
]

logger = logging.getLogger(__name__)


def filter_images_with_only_crowd_annotations(dataset_dicts: List[dict]) -> List[dict]:
    """Keep images that have at least one non-crowd annotation."""
    before = len(dataset_dicts)
    kept = [
        d for d in dataset_dicts if any(a.get("iscrowd", 0) == 0 for a in d["annotations"])
    ]
    logger.info(
        "Removed %d images with no usable annotations. %d images left.", before - len(kept), len(kept)
    )
    return kept


def filter_images_with_few_keypoints(dataset_dicts: List[dict], min_keypoints_per_image: int) -> List[dict]:
    """Keep images with at least ``min_keypoints_per_image`` visible keypoints."""
    def visible(d: dict) -> int:
        return sum(
            int((np.asarray(a["keypoints"][2::3]) > 0).sum())
            for a in d["annotations"]
            if "keypoints" in a
        )

    before = len(dataset_dicts)
    kept = [d for d in dataset_dicts if visible(d) >= min_keypoints_per_image]
    logger.info(
        "Removed %d images with fewer than %d keypoints.", before - len(kept), min_keypoints_per_image
    )
    return kept


def load_proposals_into_dataset(dataset_dicts: List[dict], proposal_file: str) -> List[dict]:
    """Attach precomputed proposals from a pickle to the dataset dicts (in place).

    The pickle holds "ids", "boxes" (list of (R, 4)), "objectness_logits" (list of
    (R,)) and optionally "bbox_mode" (default XYXY_ABS); "indexes"/"scores" are accepted
    as old names. Each record gets "proposal_boxes", "proposal_objectness_logits"
    (sorted by decreasing score) and "proposal_bbox_mode".

    Raises:
        KeyError: an image id of the dataset has no proposals in the file.
    """
    logger.info("Loading proposals from: %s", proposal_file)
    with PathManager.open(proposal_file, "rb") as f:
        proposals = pickle.load(f, encoding="latin1")
    for old, new in (("indexes", "ids"), ("scores", "objectness_logits")):
        if old in proposals:
            proposals[new] = proposals.pop(old)
    wanted = {str(r["image_id"]) for r in dataset_dicts}
    id_to_index = {str(i): k for k, i in enumerate(proposals["ids"]) if str(i) in wanted}
    bbox_mode = BoxMode(proposals["bbox_mode"]) if "bbox_mode" in proposals else BoxMode.XYXY_ABS
    for record in dataset_dicts:
        key = str(record["image_id"])
        if key not in id_to_index:
            raise KeyError(f"Image id {key} has no proposals in '{proposal_file}'.")
        i = id_to_index[key]
        logits = proposals["objectness_logits"][i]
        order = logits.argsort()[::-1]
        record["proposal_boxes"] = proposals["boxes"][i][order]
        record["proposal_objectness_logits"] = logits[order]
        record["proposal_bbox_mode"] = bbox_mode
    return dataset_dicts


def print_instances_class_histogram(dataset_dicts: List[dict], class_names: Sequence[str]) -> None:
    """Log a table of the number of non-crowd instances per category.

    Raises:
        ValueError: a category id is outside ``[0, len(class_names))``.
    """
    num_classes = len(class_names)
    histogram = np.zeros((num_classes,), dtype=np.int64)
    for entry in dataset_dicts:
        classes = np.asarray(
            [a["category_id"] for a in entry["annotations"] if not a.get("iscrowd", 0)], dtype=np.int64
        )
        if len(classes):
            if classes.min() < 0 or classes.max() >= num_classes:
                bad = classes.min() if classes.min() < 0 else classes.max()
                raise ValueError(
                    f"Got an invalid category_id={bad} in '{entry.get('file_name')}' for a "
                    f"dataset of {num_classes} classes"
                )
        histogram += np.bincount(classes, minlength=num_classes)

    n_cols = min(6, num_classes * 2)

    def short(name: str) -> str:
        return name[:11] + ".." if len(name) > 13 else name

    cells: List[Any] = list(
        itertools.chain(*[[short(class_names[i]), int(v)] for i, v in enumerate(histogram)])
    )
    total = sum(cells[1::2])
    cells.extend([None] * (n_cols - (len(cells) % n_cols)))
    if num_classes > 1:
        cells.extend(["total", total])
    rows = itertools.zip_longest(*[cells[i::n_cols] for i in range(n_cols)])
    table = tabulate(
        rows,
        headers=["category", "#instances"] * (n_cols // 2),
        tablefmt="pipe",
        numalign="left",
        stralign="center",
    )
    logger.info("Distribution of instances among all %d categories:\n%s", num_classes, table)


def get_detection_dataset_dicts(
    names: Union[str, Sequence[str]],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Optional[Sequence[str]] = None,
    check_consistency: bool = True,
) -> List[dict]:
    """Load, concatenate and filter the dataset dicts of registered datasets.

    Args:
        names: one name or several registered in :data:`DatasetCatalog`.
        filter_empty: drop images without a non-crowd annotation.
        min_keypoints: drop images with fewer visible keypoints (0 = keep all).
        proposal_files: one proposal pickle per name, or None.
        check_consistency: require equal ``thing_classes`` across the datasets and log
            the per-category instance histogram.

    Raises:
        KeyError: a name is not registered (the message lists the registered ones).
        ValueError: no names, a dataset is empty, proposal files do not match the names,
            or nothing is left after filtering.
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("get_detection_dataset_dicts needs at least one dataset name; got [].")
    per_dataset = [DatasetCatalog.get(name) for name in names]
    for name, dicts in zip(names, per_dataset):
        if len(dicts) == 0:
            raise ValueError(f"Dataset '{name}' is empty!")

    if proposal_files is not None:
        if len(proposal_files) != len(names):
            raise ValueError(
                f"Got {len(proposal_files)} proposal files for {len(names)} datasets {names}."
            )
        per_dataset = [
            load_proposals_into_dataset(dicts, f) for dicts, f in zip(per_dataset, proposal_files)
        ]

    if isinstance(per_dataset[0], torchdata.Dataset):
        return torchdata.ConcatDataset(per_dataset)

    dataset_dicts = list(itertools.chain.from_iterable(per_dataset))
    has_instances = "annotations" in dataset_dicts[0]
    if filter_empty and has_instances:
        dataset_dicts = filter_images_with_only_crowd_annotations(dataset_dicts)
    if min_keypoints > 0 and has_instances:
        dataset_dicts = filter_images_with_few_keypoints(dataset_dicts, min_keypoints)

    if check_consistency and has_instances:
        try:
            class_names = MetadataCatalog.get(names[0]).thing_classes
        except AttributeError:  # no class names: nothing to check or print
            class_names = None
        if class_names is not None:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(dataset_dicts, class_names)

    if not dataset_dicts:
        raise ValueError(f"No valid data found in {','.join(names)}.")
    return dataset_dicts


def _per_rank_batch_size(total_batch_size: int) -> int:
    world_size = get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ValueError(
            f"Total batch size ({total_batch_size}) must be divisible by the number of "
            f"gpus ({world_size})."
        )
    return total_batch_size // world_size


def build_batch_data_loader(
    dataset,
    sampler,
    total_batch_size: int,
    *,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    collate_fn: Optional[Callable] = None,
):
    """Batched loader over an already-mapped dataset, as detectron2 v0.6 builds it.

    Items are produced in the sampler's order (workers share the stream); batches are
    lists (no collation unless ``collate_fn``) of ``total_batch_size / world_size``.
    With aspect-ratio grouping the result is an :class:`AspectRatioGroupedDataset`.
    For exact resume use :func:`build_detection_train_loader` with a map-style dataset.

    Raises:
        ValueError: the batch size is not divisible by the world size, or a sampler is
            given with an iterable dataset.
    """
    batch_size = _per_rank_batch_size(total_batch_size)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("an IterableDataset brings its own order: pass sampler=None")
    else:
        dataset = ToIterableDataset(dataset, sampler)

    if aspect_ratio_grouping:
        loader = torchdata.DataLoader(
            dataset,
            num_workers=num_workers,
            collate_fn=operator.itemgetter(0),
            worker_init_fn=worker_init_reset_seed,
        )
        grouped = AspectRatioGroupedDataset(loader, batch_size)
        return grouped if collate_fn is None else MapDataset(grouped, collate_fn)
    return torchdata.DataLoader(
        dataset,
        batch_size=batch_size,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
        worker_init_fn=worker_init_reset_seed,
    )


def _train_loader_from_config(cfg, mapper=None, *, dataset=None, sampler=None) -> Dict[str, Any]:
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
            if cfg.MODEL.KEYPOINT_ON
            else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    if mapper is None:
        mapper = DatasetMapper(cfg, True)
    if sampler is None:
        name = cfg.DATALOADER.SAMPLER_TRAIN
        logger.info("Using training sampler %s", name)
        if name == "TrainingSampler":
            sampler = TrainingSampler(len(dataset))
        elif name == "RepeatFactorTrainingSampler":
            factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dataset, cfg.DATALOADER.REPEAT_THRESHOLD
            )
            sampler = RepeatFactorTrainingSampler(factors)
        else:
            raise ValueError(
                f"Unknown training sampler: {name!r} (DATALOADER.SAMPLER_TRAIN); the core "
                "supports 'TrainingSampler' and 'RepeatFactorTrainingSampler'."
            )
    return {
        "dataset": dataset,
        "sampler": sampler,
        "mapper": mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
    }


def _group_ids_of(dataset) -> Optional[np.ndarray]:
    """0 (w > h) / 1 per item of a list of dicts with width/height; None if unknown."""
    if not isinstance(dataset, list):
        return None
    if not all(isinstance(d, dict) and "width" in d and "height" in d for d in dataset):
        return None
    return np.asarray([0 if d["width"] > d["height"] else 1 for d in dataset], dtype=np.int64)


@configurable(from_config=_train_loader_from_config)
def build_detection_train_loader(
    dataset,
    *,
    mapper,
    sampler=None,
    total_batch_size,
    aspect_ratio_grouping=True,
    num_workers=0,
    collate_fn=None,
):
    """The infinite training loader.

    Args:
        dataset: list of dataset dicts, or a torch Dataset (map-style or iterable).
        mapper: item -> model input (``DatasetMapper(cfg, True)`` from a config), or None.
        sampler: indices for a map-style dataset (default :class:`TrainingSampler`);
            must be None for an iterable dataset.
        total_batch_size: batch size summed over all ranks.
        aspect_ratio_grouping: batch landscape and portrait images separately (the
            mapped items need "width"/"height").
        num_workers: DataLoader worker processes.
        collate_fn: applied to each list of items (default: keep the list).

    Returns:
        For a map-style dataset, a :class:`~sephnet.d2.data.resumable_loader.ResumableTrainLoader`
        (iterable of ``list[mapped item]`` of ``total_batch_size / world_size``, with
        ``state_dict``/``load_state_dict``/``set_position`` for exact resume); for an
        iterable dataset, detectron2's loader structure (see :func:`build_batch_data_loader`).
    """
    group_ids = _group_ids_of(dataset) if aspect_ratio_grouping else None
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)

    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("an IterableDataset brings its own order: pass sampler=None")
        return build_batch_data_loader(
            dataset,
            None,
            total_batch_size,
            aspect_ratio_grouping=aspect_ratio_grouping,
            num_workers=num_workers,
            collate_fn=collate_fn,
        )
    if sampler is None:
        sampler = TrainingSampler(len(dataset))
    if not isinstance(sampler, torchdata.Sampler):
        raise TypeError(f"sampler must be a torch Sampler, got {type(sampler)}")
    return ResumableTrainLoader(
        dataset,
        sampler,
        _per_rank_batch_size(total_batch_size),
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
        worker_init_fn=worker_init_reset_seed,
        group_ids=group_ids,
    )


def _test_loader_from_config(cfg, dataset_name, mapper=None) -> Dict[str, Any]:
    names = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name)
    proposal_files = None
    if cfg.MODEL.LOAD_PROPOSALS:
        proposal_files = [
            cfg.DATASETS.PROPOSAL_FILES_TEST[list(cfg.DATASETS.TEST).index(x)] for x in names
        ]
    dataset = get_detection_dataset_dicts(names, filter_empty=False, proposal_files=proposal_files)
    if mapper is None:
        mapper = DatasetMapper(cfg, False)
    return {"dataset": dataset, "mapper": mapper, "num_workers": cfg.DATALOADER.NUM_WORKERS}


@configurable(from_config=_test_loader_from_config)
def build_detection_test_loader(dataset, *, mapper, sampler=None, num_workers=0, collate_fn=None):
    """The inference loader: batch size 1, every item once (:class:`InferenceSampler`).

    Args:
        dataset: list of dataset dicts or a torch Dataset.
        mapper: item -> model input (``DatasetMapper(cfg, False)`` from a config), or None.
        sampler: indices (default: this rank's shard of every index); None for an
            iterable dataset.
        num_workers: DataLoader worker processes.
        collate_fn: default keeps the 1-item list.

    Returns:
        A torch DataLoader yielding ``[mapped item]``.
    """
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("an IterableDataset brings its own order: pass sampler=None")
    elif sampler is None:
        sampler = InferenceSampler(len(dataset))
    return torchdata.DataLoader(
        dataset,
        batch_size=1,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
    )


def trivial_batch_collator(batch: List[Any]) -> List[Any]:
    """Return the list of items unchanged (no tensor stacking)."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Seed every RNG of a DataLoader worker from torch's per-worker seed."""
    seed_all_rng(torch.initial_seed() % 2**31 + worker_id)
