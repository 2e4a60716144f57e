"""MNIST handwritten digits (LeCun et al. 1998), read from the IDX files of torchvision's local layout.

Layout (``root`` may be ``data/``, ``data/MNIST`` or ``data/MNIST/raw``; each file may also be gzipped,
``*-ubyte.gz``, as distributed)::

    data/MNIST/raw/
    |-- t10k-images-idx3-ubyte     split="test":  magic 2051, N, 28, 28 (big-endian int32), N*28*28 uint8
    |-- t10k-labels-idx1-ubyte                    magic 2049, N, then N uint8 labels 0-9
    |-- train-images-idx3-ubyte    split="train": the same, 60000 images
    `-- train-labels-idx1-ubyte

Nothing is ever downloaded. Items follow the sample contract of :mod:`datamodules.sample` with a
1-channel image: ``image`` ``(1, 28, 28)`` normalised by :func:`mnist_preprocessing` (MNIST mean/std
0.1307/0.3081; a 3-channel preprocessing gets the grey image on all three channels), ``label``,
``index`` (position in the split's file) and ``id`` (``"t10k#00017"``), no boxes.

Bad input: missing files raise ``FileNotFoundError`` showing the layout above; a malformed IDX file
(bad magic number, a size that does not match its header, images and labels of different counts, a
label > 9, a broken gzip stream) raises :class:`~datamodules.errors.AnnotationError` naming the file
when the dataset is built -- the whole file is unreadable, so ``on_error="skip"`` has nothing to skip.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from benchmark.runtime.preprocessing import MNIST_MEAN, MNIST_STD, Preprocessing, mnist_preprocessing
from datamodules.arrays import SPLITS, ArrayDataModule, ArrayImages, check_array_args
from datamodules.base import (
    AnnotationError,
    as_path,
    as_preprocessing,
    check_choice,
)

__all__ = ["MNIST", "MNISTDataModule", "MNIST_MEAN", "MNIST_STD", "mnist_files", "mnist_preprocessing", "read_mnist"]

_PREFIX = {"test": "t10k", "train": "train"}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # 0x0803: uint8, 3 dims; 0x0801: uint8, 1 dim

LAYOUT_HELP = """Expected MNIST in torchvision's layout (root = data/, data/MNIST or data/MNIST/raw):
  data/
  `-- MNIST/
      `-- raw/
          |-- t10k-images-idx3-ubyte     split="test": IDX images (magic 2051), or the .gz file
          |-- t10k-labels-idx1-ubyte     IDX labels (magic 2049)
          |-- train-images-idx3-ubyte    split="train"
          `-- train-labels-idx1-ubyte
Fetch it on a machine with network access (torchvision.datasets.MNIST(root, download=True)) and copy it here."""

PathLike = Union[str, os.PathLike]
Prep = Union[Preprocessing, Mapping[str, Any], str, None]


def _existing(path: Path) -> Optional[Path]:
    gz = path.with_name(path.name + ".gz")
    return path if path.is_file() else gz if gz.is_file() else None


def mnist_files(root: PathLike, split: str = "test") -> Tuple[Path, Path]:
    """``(images, labels)`` IDX paths of ``split`` under ``root`` (see the module docstring).

    Raises:
        FileNotFoundError: neither the files nor their ``.gz`` are found; the message shows the layout.
    """
    root = as_path(root, "root")
    prefix = _PREFIX[check_choice(split, "split", SPLITS)]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    folders = (root / "MNIST" / "raw", root / "raw", root)
    for folder in folders:
        found = [_existing(folder / name) for name in names]
        if all(found):
            return found[0], found[1]
    where = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"MNIST {split} files {names[0]} and {names[1]} (or .gz) not found in any of {where}."
                            f"\n{LAYOUT_HELP}")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file with this magic number (2051: ``(N, rows, cols)``; 2049: ``(N,)``)."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise AnnotationError(f"{path}: not a readable gzip file ({err}).") from err
    ndim = magic % 256
    header = 4 * (ndim + 1)
    if len(data) < header:
        raise AnnotationError(f"{path}: {len(data)} bytes, shorter than the {header}-byte IDX header.")
    found, *shape = np.frombuffer(data, dtype=">i4", count=ndim + 1).tolist()
    if found != magic:
        raise AnnotationError(f"{path}: magic number {found}, expected {magic} (an IDX file of "
                              f"{'images' if magic == IMAGES_MAGIC else 'labels'}).")
    expected = int(np.prod(shape)) if min(shape) >= 0 else -1
    if expected != len(data) - header:
        raise AnnotationError(f"{path}: the header says shape {tuple(shape)} ({expected} bytes), but "
                              f"{len(data) - header} bytes follow it.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_mnist(root: PathLike, split: str = "test") -> Tuple[Tensor, Tensor]:
    """Read the images and labels of an MNIST split.

    Args:
        root: ``data/``, ``data/MNIST`` or ``data/MNIST/raw`` (see the module docstring).
        split: ``"test"`` (``t10k-*``, 10000 images) or ``"train"`` (60000 images).

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)``.

    Raises:
        FileNotFoundError: missing files (the message shows the layout).
        AnnotationError: a malformed IDX file (named in the message).

    Examples:
        >>> import struct, tempfile
        >>> raw = Path(tempfile.mkdtemp())
        >>> _ = (raw / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">4i", 2051, 2, 28, 28) + bytes(range(256)) * 6
        ...                                                   + bytes(32))
        >>> _ = (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">2i", 2049, 2) + bytes([7, 2]))
        >>> images, labels = read_mnist(raw)
        >>> images.shape, images.dtype, images[0, 0, 27].item(), labels.tolist()
        (torch.Size([2, 28, 28]), torch.uint8, 27, [7, 2])
        >>> import shutil; shutil.rmtree(raw)
    """
    images_path, labels_path = mnist_files(root, split)
    images, labels = _read_idx(images_path, IMAGES_MAGIC), _read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise AnnotationError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
                              "labels; expected one label per image.")
    if len(labels) and labels.max() > 9:
        raise AnnotationError(f"{labels_path}: label {labels.max()} at position {labels.argmax()}, expected 0-9.")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


class MNIST(ArrayImages):
    """An MNIST split (or its first ``limit`` images) as contract samples; see the module docstring.

    Args:
        root: ``data/``, ``data/MNIST`` or ``data/MNIST/raw``.
        split: ``"test"`` (default) or ``"train"``.
        limit: keep only the first ``limit`` images (``None``: all).
        preprocessing: default :func:`mnist_preprocessing`; a 3-channel one replicates the grey channel.
        on_error: ``"raise"`` or ``"skip"`` (nothing to skip once the files have been read).

    Attributes:
        images, labels: uint8 ``(N, 28, 28)`` and int64 ``(N,)`` of :func:`read_mnist`.
        classes: ``["0", ..., "9"]``.

    Examples:
        >>> import struct, tempfile
        >>> raw = Path(tempfile.mkdtemp())
        >>> _ = (raw / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">4i", 2051, 3, 28, 28) + bytes(3 * 784))
        >>> _ = (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">2i", 2049, 3) + bytes([7, 2, 1]))
        >>> ds = MNIST(raw, limit=2)
        >>> s = ds[1]
        >>> len(ds), s["image"].shape, s["label"], s["index"], s["id"], round(s["image"][0, 0, 0].item(), 4)
        (2, torch.Size([1, 28, 28]), 2, 1, 't10k#00001', -0.4242)
        >>> import shutil; shutil.rmtree(raw)
    """

    files = staticmethod(lambda root, split: mnist_files(root, split))

    def __init__(self, root: PathLike, split: str = "test", limit: Optional[int] = None, preprocessing: Prep = None,
                 on_error: str = "raise") -> None:
        check_array_args(root, split, limit)
        prep = mnist_preprocessing() if preprocessing is None else as_preprocessing(preprocessing)
        root = mnist_files(root, split)[0].parent
        images, labels = read_mnist(root, split)
        super().__init__(images, labels, [f"{_PREFIX[split]}#{i:05d}" for i in range(len(labels))], prep, on_error,
                         limit)
        self.root, self.split, self.classes = root, split, [str(d) for d in range(10)]


class MNISTDataModule(ArrayDataModule):
    """Predict datamodule over :class:`MNIST`: its arguments, plus ``batch_size`` and ``num_workers``
    (see :class:`~datamodules.base.CamDataModule`); they are saved as hyperparameters.

    Examples:
        >>> dm = MNISTDataModule("/data", split="train", limit=100, batch_size=16)
        >>> dm.hparams.split, dm.preprocessing.input_size
        ('train', (1, 28, 28))
    """

    dataset_class = MNIST

    def __init__(self, root: PathLike, split: str = "test", limit: Optional[int] = None, preprocessing: Prep = None,
                 batch_size: int = 32, num_workers: int = 0, on_error: str = "raise") -> None:
        super().__init__(mnist_preprocessing() if preprocessing is None else preprocessing, batch_size, num_workers,
                         on_error)
        check_array_args(root, split, limit)
        self.save_hyperparameters()
