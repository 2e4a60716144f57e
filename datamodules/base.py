"""Shared pieces of the cam-bench datamodules: argument checks, the base dataset with the
``on_error`` policy, and the base LightningDataModule (``prepare_data`` checks, ``setup``
assigns, a thin ``predict_dataloader`` with :func:`~datamodules.sample.collate_samples`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Collection, Dict, FrozenSet, Mapping, Optional, Tuple, Union

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, IterableDataset

from benchmark._utils import check_choice  # one check_choice for metrics and data
from benchmark.runtime.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, imagenet_preprocessing
from datamodules.errors import AnnotationError
from datamodules.images import CorruptImageError
from datamodules.sample import collate_samples, skipped_sample
from datamodules.shards import ShardBatchSampler

__all__ = ["AnnotationError", "CamDataModule", "CamDataset", "ON_ERROR", "as_path", "as_preprocessing",
           "check_choice", "check_positive_int", "imagenet_preprocessing"]

#: ``on_error`` policies: raise on the first unreadable sample, or skip (log, count, list) it.
ON_ERROR = ("raise", "skip")


def as_path(value: Any, name: str) -> Path:
    """``Path(value)`` (``~`` expanded), or a TypeError naming the argument ``name``."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"Expected `{name}` to be a path (str or os.PathLike), but got {type(value).__name__}.")
    return Path(value).expanduser()


def check_positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    """Raise a TypeError unless ``value`` is an int, a ValueError unless it is > 0 (>= 0 with ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected `{name}` to be an int {bound}, but got {type(value).__name__} {value!r}.")
    if value < (0 if allow_zero else 1):
        raise ValueError(f"Expected `{name}` to be an int {bound}, but got {value!r}.")
    return value


def as_preprocessing(value: Union[Preprocessing, Mapping[str, Any], str, None]) -> Preprocessing:
    """``None`` (ImageNet default), a :class:`Preprocessing`, its dict, or a backbone name.

    A dict may leave out ``input_size``, ``interpolation``, ``mean``, ``std``, ``resize_size`` and ``resize_mode``
    (``"shorter"``; ``"squash"`` warps to ``resize_size x resize_size``, see
    :data:`~benchmark.runtime.preprocessing.RESIZE_MODES`).

    Examples:
        >>> as_preprocessing(None).crop_size
        224
        >>> as_preprocessing({"resize_size": 128, "crop_size": 112, "mean": [0.5] * 3, "std": [0.5] * 3}).input_size
        (3, 112, 112)
        >>> as_preprocessing({"resize_size": 64, "crop_size": 56, "resize_mode": "squash"}).resize_mode
        'squash'
    """
    if value is None:
        return imagenet_preprocessing()
    if isinstance(value, Preprocessing):
        return value
    if isinstance(value, str):
        from benchmark.runtime.backbones import create_backbone

        return create_backbone(value).preprocessing
    if isinstance(value, Mapping):
        fields = dict(value)
        crop = check_positive_int(fields.get("crop_size", 224), "crop_size")
        fields.setdefault("input_size", (3, crop, crop))
        fields.setdefault("interpolation", "bilinear")
        fields.setdefault("mean", IMAGENET_MEAN)
        fields.setdefault("std", IMAGENET_STD)
        fields.setdefault("resize_size", crop)
        valid = set(Preprocessing.__dataclass_fields__)
        unknown = sorted(set(fields) - valid)
        if unknown:
            raise ValueError(f"Unknown preprocessing fields {unknown}; valid: {sorted(valid)}.")
        return Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    raise TypeError(f"Expected `preprocessing` to be None, a Preprocessing, a dict or a backbone name, but got "
                    f"{type(value).__name__}.")


class CamDataset(Dataset):
    """Map-style base dataset: subclasses implement :meth:`load`, :meth:`sample_id` and
    :meth:`global_index`; ``__getitem__`` applies the ``on_error`` policy to unreadable images
    (:class:`~datamodules.images.CorruptImageError`) and malformed annotations (:class:`AnnotationError`)."""

    def __init__(self, preprocessing: Preprocessing, on_error: str = "raise") -> None:
        self.preprocessing = preprocessing
        self.transform = preprocessing.transform()
        self.on_error = check_choice(on_error, "on_error", ON_ERROR)

    def load(self, i: int) -> Dict[str, Any]:
        raise NotImplementedError

    def sample_id(self, i: int) -> str:
        raise NotImplementedError

    def global_index(self, i: int) -> int:
        return i

    def __getitem__(self, i: int) -> Dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"Index {i} out of range for {len(self)} samples.")
        try:
            return self.load(i)
        except (CorruptImageError, AnnotationError) as err:
            if self.on_error == "raise":
                raise
            return skipped_sample(self.global_index(i), self.sample_id(i), err)


class CamDataModule(pl.LightningDataModule):
    """Base predict datamodule: subclasses implement :meth:`check_files` and :meth:`build_dataset`.

    Args:
        preprocessing: the backbone's preprocessing (see :func:`as_preprocessing`).
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
        on_error: ``"raise"`` (default) or ``"skip"`` unreadable images / malformed annotations.
    """

    def __init__(self, preprocessing: Union[Preprocessing, Mapping[str, Any], str, None] = None,
                 batch_size: int = 32, num_workers: int = 0, on_error: str = "raise") -> None:
        super().__init__()
        self.preprocessing = as_preprocessing(preprocessing)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.num_workers = check_positive_int(num_workers, "num_workers", allow_zero=True)
        self.on_error = check_choice(on_error, "on_error", ON_ERROR)
        self.dataset: Optional[Dataset] = None
        self._shards: Optional[Dict[str, Any]] = None

    def use_shards(self, skip: Optional[Collection[int]] = None, limit: Optional[int] = None) -> None:
        """Predict in fixed-composition shards (:mod:`datamodules.shards`) over the first ``limit`` positions,
        leaving out the finished shards ``skip``; needs ``Trainer(use_distributed_sampler=False)`` under DDP."""
        self._shards = {"skip": frozenset(skip or ()), "limit": limit}

    def rank_and_world(self) -> Tuple[int, int]:
        """``(global rank, world size)`` of the attached trainer; ``(0, 1)`` without one."""
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def used_size(self) -> int:
        """Number of dataset positions the predict loop covers (after ``use_shards(limit=...)``)."""
        if self.dataset is None:
            self.setup("predict")
        limit = (self._shards or {}).get("limit")
        return len(self.dataset) if limit is None else min(len(self.dataset), limit)

    #: annotations every sample carries beyond image and label (``"boxes"``, ``"masks"``)
    PROVIDES: ClassVar[FrozenSet[str]] = frozenset()

    def provides(self) -> FrozenSet[str]:
        """Annotations the samples carry (default :attr:`PROVIDES`): checked against the metrics' needs before
        any model is built."""
        return self.PROVIDES

    def check_files(self) -> None:
        """Raise ``FileNotFoundError`` (showing the expected layout) when inputs are missing."""

    def build_dataset(self) -> Dataset:
        raise NotImplementedError

    def prepare_data(self) -> None:
        self.check_files()

    def setup(self, stage: Optional[str] = None) -> None:
        if stage not in (None, "predict"):
            raise ValueError(f"{type(self).__name__} is predict-only; expected stage 'predict', but got {stage!r}.")
        if self.dataset is None:
            self.check_files()
            self.dataset = self.build_dataset()

    def predict_dataloader(self) -> DataLoader:
        if self._shards is None:
            return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                              collate_fn=collate_samples)
        if isinstance(self.dataset, IterableDataset):
            raise ValueError(f"{type(self).__name__} streams an IterableDataset: fixed shards (resume, N-process "
                             "identity) need a map-style dataset.")
        sampler = ShardBatchSampler(self.used_size(), self.batch_size, *self.rank_and_world(), self._shards["skip"])
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate_samples)
