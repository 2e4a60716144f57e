"""Datamodule registry: ``list_datamodules()``, ``create_datamodule(name, **kwargs)``, ``describe_datamodule``.

Unknown names raise a ``KeyError`` listing close matches and every valid name; unknown keyword
arguments raise a ``TypeError`` listing the datamodule's valid arguments.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Dict, List, Type

import pytorch_lightning as pl

from datamodules.chestxray import ChestXray14DataModule
from datamodules.cifar import CIFAR10DataModule
from datamodules.hf_stream import HFStreamDataModule
from datamodules.imagenet import ImageNetValDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.random_images import RandomImagesDataModule
from datamodules.synthetic import SyntheticShapesDataModule
from datamodules.voc import VOC2007DataModule

__all__ = ["DATAMODULES", "create_datamodule", "describe_datamodule", "list_datamodules"]

#: name -> (class, one-line description); ``synthetic`` is the offline default of ``cam-bench run``.
DATAMODULES: Dict[str, Type[pl.LightningDataModule]] = {
    "synthetic": SyntheticShapesDataModule,
    "imagenet": ImageNetValDataModule,
    "voc2007": VOC2007DataModule,
    "hf": HFStreamDataModule,
    "random": RandomImagesDataModule,
    "chestxray14": ChestXray14DataModule,
    "mnist": MNISTDataModule,
    "cifar10": CIFAR10DataModule,
}

_DESCRIPTIONS = {
    "synthetic": "SyntheticShapes: procedural scenes with exact boxes and masks, offline (the default)",
    "imagenet": "ILSVRC2012 validation with boxes (Kaggle LOC csv or per-image XML)",
    "voc2007": ("PASCAL VOC2007: one item per (image, class present), for the pointing game; object masks with "
                "segmentation=true"),
    "hf": "Hugging Face `datasets` streaming (hub or local Parquet/imagefolder), split across ranks",
    "random": "seeded noise images and labels (smoke tests; no ground truth)",
    "chestxray14": "NIH ChestX-ray14: one item per (image, boxed finding), 14-way CheXNet class order",
    "mnist": "MNIST digits from torchvision's local IDX files (1 x 28 x 28; no boxes)",
    "cifar10": "CIFAR-10 from the pickled python-version batches (32 x 32; no boxes)",
}


def list_datamodules() -> List[str]:
    """Registered datamodule names.

    Examples:
        >>> list_datamodules()
        ['chestxray14', 'cifar10', 'hf', 'imagenet', 'mnist', 'random', 'synthetic', 'voc2007']
    """
    return sorted(DATAMODULES)


def _lookup(name: str) -> Type[pl.LightningDataModule]:
    if name not in DATAMODULES:
        close = difflib.get_close_matches(str(name), list(DATAMODULES), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"Unknown datamodule {name!r}.{hint} Valid: {list_datamodules()}.")
    return DATAMODULES[name]


def describe_datamodule(name: str) -> str:
    """One-line description of ``name``.

    Examples:
        >>> describe_datamodule("mnist")
        "MNIST digits from torchvision's local IDX files (1 x 28 x 28; no boxes)"
    """
    _lookup(name)
    return _DESCRIPTIONS[name]


def create_datamodule(name: str, **kwargs: Any) -> pl.LightningDataModule:
    """Build datamodule ``name`` with its keyword arguments (checked against its signature).

    Examples:
        >>> dm = create_datamodule("synthetic", size=4, image_size=32)
        >>> type(dm).__name__
        'SyntheticShapesDataModule'
        >>> create_datamodule("synthetc")
        Traceback (most recent call last):
        ...
        KeyError: "Unknown datamodule 'synthetc'. Did you mean ['synthetic']? Valid: ['chestxray14', 'cifar10', \
'hf', 'imagenet', 'mnist', 'random', 'synthetic', 'voc2007']."
    """
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    valid = [p for p in params if p != "self" and params[p].kind not in variadic]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown and not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"Unknown arguments {unknown} for datamodule {name!r}; valid: {valid}.")
    return cls(**kwargs)
