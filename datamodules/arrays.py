"""Datasets read whole into uint8 arrays (MNIST, CIFAR-10): the shared dataset and datamodule bases.

:class:`ArrayImages` turns ``(N, H, W)`` (grey) or ``(N, C, H, W)`` uint8 images, their labels and ids into
contract samples (:mod:`datamodules.sample`): a 1-channel preprocessing gets grey images, a 3-channel one
RGB (a grey image on all three channels). :class:`ArrayDataModule` checks the files and builds the
subclass's dataset from the datamodule's hyperparameters (``root``, ``split``, ``limit``).
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, Optional, Sequence

from PIL import Image
from torch import Tensor

from benchmark.runtime.preprocessing import Preprocessing
from datamodules.base import CamDataModule, CamDataset, as_path, check_choice, check_positive_int
from datamodules.sample import make_sample

__all__ = ["ArrayDataModule", "ArrayImages", "SPLITS", "check_array_args"]

SPLITS = ("test", "train")


def check_array_args(root: Any, split: Any, limit: Any) -> None:
    """TypeError / ValueError naming ``root``, ``split`` or ``limit`` when one is not valid."""
    as_path(root, "root")
    check_choice(split, "split", SPLITS)
    if limit is not None:
        check_positive_int(limit, "limit")


class ArrayImages(CamDataset):
    """In-memory uint8 images as contract samples; ``index`` = position in the split, ``id`` = ``ids[i]``.

    Args:
        images: ``(N, H, W)`` or ``(N, C, H, W)`` uint8.
        labels: ``(N,)`` int64.
        ids: one id per image.
        preprocessing: 1 or 3 channels.
        on_error: ``"raise"`` or ``"skip"`` (nothing to skip once the arrays are read).
        limit: keep only the first ``limit`` images (``None``: all).

    Examples:
        >>> import torch
        >>> prep = Preprocessing((1, 2, 2), 2, 2, (0.0,), (1.0,), "bilinear")
        >>> ds = ArrayImages(torch.full((3, 2, 2), 255, dtype=torch.uint8), torch.tensor([4, 5, 6]), "abc", prep)
        >>> s = ds[1]
        >>> len(ds), s["image"].tolist(), s["label"], s["id"]
        (3, [[[1.0, 1.0], [1.0, 1.0]]], 5, 'b')
    """

    def __init__(self, images: Tensor, labels: Tensor, ids: Sequence[str], preprocessing: Preprocessing,
                 on_error: str = "raise", limit: Optional[int] = None) -> None:
        check_choice(preprocessing.input_size[0], "preprocessing.input_size[0] (channels)", (1, 3))
        super().__init__(preprocessing, on_error)
        if limit is not None:
            images, labels, ids = images[:limit].clone(), labels[:limit], ids[:limit]
        self.images, self.labels, self.ids = images, labels, list(ids)
        self._mode = "L" if preprocessing.input_size[0] == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.labels)

    def sample_id(self, i: int) -> str:
        return self.ids[i]

    def load(self, i: int) -> Dict[str, Any]:
        array = self.images[i]
        array = array.permute(1, 2, 0) if array.ndim == 3 else array  # (C, H, W) -> (H, W, C) for PIL
        image = Image.fromarray(array.numpy()).convert(self._mode)
        return make_sample(image, self.preprocessing, self.transform, label=int(self.labels[i]), index=i,
                           sample_id=self.sample_id(i))


class ArrayDataModule(CamDataModule):
    """Predict datamodule over an :class:`ArrayImages` subclass (``dataset_class``), whose ``files(root, split)``
    raises ``FileNotFoundError`` showing the layout; subclasses save ``root``, ``split`` and ``limit`` as
    hyperparameters."""

    dataset_class: ClassVar[type]

    def check_files(self) -> None:
        self.dataset_class.files(self.hparams.root, self.hparams.split)

    def build_dataset(self) -> ArrayImages:
        hp = self.hparams
        return self.dataset_class(hp.root, hp.split, hp.limit, self.preprocessing, self.on_error)
