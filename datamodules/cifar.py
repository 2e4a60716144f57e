"""CIFAR-10 (Krizhevsky 2009), read from the pickled batches of the official "python version".

Layout (``root`` may be ``data/`` or ``data/cifar-10-batches-py`` itself)::

    data/cifar-10-batches-py/
    |-- batches.meta          {b"label_names": [b"airplane", ..., b"truck"], ...}
    |-- test_batch            split="test":  {b"data": uint8 (10000, 3072), b"labels": [int] * 10000, ...}
    `-- data_batch_1 ... 5    split="train": 5 x 10000 images

A row of ``data`` is the 32 x 32 red plane, then green, then blue (row-major). The pickles are read
here, not by ``torchvision.datasets.CIFAR10`` (which refuses files whose MD5 differs from the
release's), with an unpickler that only builds numpy arrays -- a pickle naming any other global is
refused. Python 2's byte-string keys (``b"data"``) and Python 3 ``str`` keys are both accepted.

Items follow the sample contract of :mod:`datamodules.sample`: ``image`` ``(3, 32, 32)`` normalised
by :func:`cifar10_preprocessing` (CIFAR-10 mean/std; a 1-channel preprocessing gets the PIL "L"
grey image), ``label``, ``index`` (position in the split, batches in order) and ``id``
(``"test_batch#00017"``: the batch file and the row in it), no boxes. Nothing is ever downloaded.

Bad input: missing files raise ``FileNotFoundError`` showing the layout above; a file that is not a
readable pickle, lacks ``data``/``labels``, has ``data`` other than uint8 ``(N, 3072)``, a label
count other than N or labels outside the ``label_names`` raises
:class:`~datamodules.errors.AnnotationError` naming the file when the dataset is built (the whole
file is unreadable, so ``on_error="skip"`` has nothing to skip).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from benchmark.runtime.preprocessing import Preprocessing
from datamodules.arrays import SPLITS, ArrayDataModule, ArrayImages, check_array_args
from datamodules.base import (
    AnnotationError,
    as_path,
    as_preprocessing,
    check_choice,
)

__all__ = ["CIFAR10", "CIFAR10DataModule", "CIFAR10_MEAN", "CIFAR10_STD", "cifar10_files", "cifar10_preprocessing",
           "read_cifar10"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FOLDER = "cifar-10-batches-py"
META = "batches.meta"
BATCHES = {"test": ("test_batch",), "train": tuple(f"data_batch_{k}" for k in range(1, 6))}

LAYOUT_HELP = """Expected CIFAR-10's python version (cifar-10-python.tar.gz unpacked; root = data/ or the folder):
  data/
  `-- cifar-10-batches-py/
      |-- batches.meta                      pickle: b"label_names"
      |-- test_batch                        split="test": pickle with b"data" uint8 (N, 3072) and b"labels"
      `-- data_batch_1 ... data_batch_5     split="train"
Fetch it on a machine with network access (torchvision.datasets.CIFAR10(root, download=True)) and copy it here."""

PathLike = Union[str, os.PathLike]
Prep = Union[Preprocessing, Mapping[str, Any], str, None]

#: The only globals a CIFAR batch may name: numpy arrays (protocols 2-5) and Python 3's bytes encoding.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy.core.numeric", "_frombuffer"), ("numpy", "ndarray"),
            ("numpy", "dtype"), ("_codecs", "encode")}


def cifar10_preprocessing() -> Preprocessing:
    """The CIFAR-10 default: 3 channels, 32 x 32 (no resize or crop), CIFAR-10 mean/std.

    Examples:
        >>> cifar10_preprocessing().input_size, cifar10_preprocessing().std
        ((3, 32, 32), (0.247, 0.2435, 0.2616))
    """
    return Preprocessing((3, 32, 32), 32, 32, CIFAR10_MEAN, CIFAR10_STD, "bilinear")


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        canonical = module.replace("numpy._core", "numpy.core")
        if (canonical, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if canonical.startswith("numpy.core") and hasattr(np, "_core"):  # numpy 2 renamed numpy.core
            module = canonical.replace("numpy.core", "numpy._core")
        return super().find_class(module, name)


def _load(path: Path, keys: Tuple[str, ...]) -> Dict[str, Any]:
    """The pickled dict at ``path`` with ``str`` keys; AnnotationError naming the file unless it has ``keys``."""
    try:
        with open(path, "rb") as handle:
            entry = _BatchUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError) as err:
        raise AnnotationError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err}).") from err
    if not isinstance(entry, dict):
        raise AnnotationError(f"{path}: expected a pickled dict, but got {type(entry).__name__}.")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    missing = [k for k in keys if k not in entry]
    if missing:
        raise AnnotationError(f"{path}: missing {missing} (found keys {sorted(map(str, entry))}).")
    return entry


def cifar10_files(root: PathLike, split: str = "test") -> Tuple[Path, List[Path]]:
    """``(batches.meta, [batch files of split])`` under ``root`` (see the module docstring).

    Raises:
        FileNotFoundError: a file is missing; the message shows the layout.
    """
    root = as_path(root, "root")
    names = BATCHES[check_choice(split, "split", SPLITS)]
    folders = (root / FOLDER, root)
    for folder in folders:
        if all((folder / name).is_file() for name in (META, *names)):
            return folder / META, [folder / name for name in names]
    folder = next((f for f in folders if f.is_dir()), root)
    missing = [name for name in (META, *names) if not (folder / name).is_file()]
    raise FileNotFoundError(f"CIFAR-10 {split} files {missing} not found in {folder} (looked in "
                            f"{', '.join(map(str, folders))}).\n{LAYOUT_HELP}")


def _label_names(meta: Path) -> List[str]:
    names = _load(meta, ("label_names",))["label_names"]
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise AnnotationError(f"{meta}: expected `label_names` to be a list of strings, but got {names!r:.80}.")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def _read_batch(path: Path, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(data uint8 (N, 3072), labels int64 (N,))`` of one batch file, checked."""
    entry = _load(path, ("data", "labels"))
    data, labels = entry["data"], entry["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise AnnotationError(f"{path}: expected `data` to be a uint8 array of shape (N, 3072), but got "
                              f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}.")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise AnnotationError(f"{path}: expected `labels` to be a list of ints ({err}).") from err
    if len(labels) != len(data):
        raise AnnotationError(f"{path}: {len(data)} images but {len(labels)} labels; expected one label per image.")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise AnnotationError(f"{path}: label {labels[bad[0]]} at row {bad[0]}, expected 0-{num_classes - 1} "
                              f"(the batches.meta label_names).")
    return data, labels


def read_cifar10(root: PathLike, split: str = "test") -> Tuple[Tensor, Tensor]:
    """Read the images and labels of a CIFAR-10 split (train: the 5 batches in order).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        FileNotFoundError: missing files (the message shows the layout).
        AnnotationError: a malformed pickle (named in the message).

    Examples:
        >>> import pickle, tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog"]}))
        >>> data = np.zeros((2, 3072), dtype=np.uint8); data[1, 1024] = 255  # image 1: green at (0, 0)
        >>> _ = (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [1, 0]}))
        >>> images, labels = read_cifar10(folder)
        >>> images.shape, images[1, :, 0, 0].tolist(), labels.tolist()
        (torch.Size([2, 3, 32, 32]), [0, 255, 0], [1, 0])
        >>> import shutil; shutil.rmtree(folder)
    """
    meta, paths = cifar10_files(root, split)
    num_classes = len(_label_names(meta))
    batches = [_read_batch(path, num_classes) for path in paths]
    data = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(data), torch.from_numpy(np.concatenate([b[1] for b in batches]))


class CIFAR10(ArrayImages):
    """A CIFAR-10 split (or its first ``limit`` images) as contract samples; see the module docstring.

    Args:
        root: ``data/`` or ``data/cifar-10-batches-py``.
        split: ``"test"`` (default) or ``"train"``.
        limit: keep only the first ``limit`` images (``None``: all).
        preprocessing: default :func:`cifar10_preprocessing`; a 1-channel one gets grey images.
        on_error: ``"raise"`` or ``"skip"`` (nothing to skip once the files have been read).

    Attributes:
        images, labels: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.
        classes: the ``label_names`` of ``batches.meta`` (``"airplane"``, ...).

    Examples:
        >>> import pickle, tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "cifar-10-batches-py"; folder.mkdir()
        >>> _ = (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog"]}))
        >>> data = np.full((3, 3072), 255, dtype=np.uint8)
        >>> _ = (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [1, 0, 1]}))
        >>> ds = CIFAR10(folder.parent, limit=2)
        >>> s = ds[1]
        >>> len(ds), s["image"].shape, s["label"], s["id"], ds.classes, round(s["image"][0, 0, 0].item(), 4)
        (2, torch.Size([3, 32, 32]), 0, 'test_batch#00001', ['cat', 'dog'], 2.0591)
        >>> import shutil; shutil.rmtree(folder.parent)
    """

    files = staticmethod(lambda root, split: cifar10_files(root, split))

    def __init__(self, root: PathLike, split: str = "test", limit: Optional[int] = None, preprocessing: Prep = None,
                 on_error: str = "raise") -> None:
        check_array_args(root, split, limit)
        prep = cifar10_preprocessing() if preprocessing is None else as_preprocessing(preprocessing)
        meta, paths = cifar10_files(root, split)
        classes = _label_names(meta)
        batches = [_read_batch(path, len(classes)) for path in paths]
        ids = [f"{path.name}#{row:05d}" for path, (data, _) in zip(paths, batches) for row in range(len(data))]
        images = torch.from_numpy(np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32))
        super().__init__(images, torch.from_numpy(np.concatenate([b[1] for b in batches])), ids, prep, on_error,
                         limit)
        self.root, self.split, self.classes = meta.parent, split, classes


class CIFAR10DataModule(ArrayDataModule):
    """Predict datamodule over :class:`CIFAR10`: its arguments, plus ``batch_size`` and ``num_workers``
    (see :class:`~datamodules.base.CamDataModule`); they are saved as hyperparameters.

    Examples:
        >>> dm = CIFAR10DataModule("/data", limit=100, batch_size=16)
        >>> dm.hparams.split, dm.preprocessing.input_size
        ('test', (3, 32, 32))
    """

    dataset_class = CIFAR10

    def __init__(self, root: PathLike, split: str = "test", limit: Optional[int] = None, preprocessing: Prep = None,
                 batch_size: int = 32, num_workers: int = 0, on_error: str = "raise") -> None:
        super().__init__(cifar10_preprocessing() if preprocessing is None else preprocessing, batch_size,
                         num_workers, on_error)
        check_array_args(root, split, limit)
        self.save_hyperparameters()
