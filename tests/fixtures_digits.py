"""Mini MNIST and CIFAR-10 copies in the official file formats, from seeded data (the same bytes each time).

* :func:`make_mnist` -- torchvision's ``<root>/MNIST/raw/{t10k,train}-{images-idx3,labels-idx1}-ubyte``: IDX
  files with big-endian int32 headers (magic 2051: N, 28, 28; magic 2049: N) and uint8 bodies, or their
  ``.gz`` (written with mtime 0, so deterministic). A class-``k`` digit is noise with a bright 6 x 6
  square at a position of its own, so a small CNN can learn it.
* :func:`make_cifar10` -- ``<root>/cifar-10-batches-py/`` with ``batches.meta``, ``test_batch`` or
  ``data_batch_1..5``, pickled as Python 2's cPickle wrote the release (protocol 2, keys and strings as
  8-bit strings -- ``b"data"`` under ``encoding="bytes"``, ``"data"`` under ``"latin1"`` -- and numpy
  arrays through ``numpy.core.multiarray._reconstruct``), or as Python 3 pickles with ``py2=False``.
"""
import gzip
import pickle
import struct
from pathlib import Path
from typing import Tuple

import numpy as np

__all__ = ["CIFAR10_CLASSES", "make_cifar10", "make_mnist"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_PREFIX = {"test": "t10k", "train": "train"}


def make_mnist(root, n: int = 32, split: str = "test", seed: int = 0, gz: bool = False
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Write ``n`` digits of ``split`` under ``root/MNIST/raw``; return ``(images uint8 (n, 28, 28), labels (n,))``."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) * 7 + seed) % 10
    images = rng.integers(0, 64, (n, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = 1 + 7 * (label // 4), 1 + 7 * (label % 4)
        image[row:row + 6, col:col + 6] = 255
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    files = {f"{_PREFIX[split]}-images-idx3-ubyte": struct.pack(">4i", 2051, n, 28, 28) + images.tobytes(),
             f"{_PREFIX[split]}-labels-idx1-ubyte": struct.pack(">2i", 2049, n) + labels.astype(np.uint8).tobytes()}
    for name, data in files.items():
        if gz:
            with open(raw / f"{name}.gz", "wb") as handle, gzip.GzipFile("", "wb", fileobj=handle, mtime=0) as out:
                out.write(data)
        else:
            (raw / name).write_bytes(data)
    return images, labels.astype(np.int64)


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle: ``str``/``bytes`` as 8-bit strings, numpy under ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_string
    dispatch[bytes] = save_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):  # what numpy 1.x on Python 2 wrote: the raw bytes as a string
            return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                    (1, obj.shape, obj.dtype, False, obj.tobytes()))
        return NotImplemented


def _dump(path: Path, entry: dict, py2: bool) -> None:
    with open(path, "wb") as handle:
        if py2:
            _Py2Pickler(handle, protocol=2).dump(entry)
        else:
            pickle.dump({k.decode(): v for k, v in entry.items()}, handle, protocol=5)


def make_cifar10(root, n: int = 16, split: str = "test", seed: int = 0, py2: bool = True
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Write ``batches.meta`` and the batches of ``split`` (``n`` images each) under ``root/cifar-10-batches-py``.

    Returns:
        ``(data uint8 (N, 3072), labels (N,))`` over the split's batches in order, as written.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ["test_batch"] if split == "test" else [f"data_batch_{k}" for k in range(1, 6)]
    meta = {b"num_cases_per_batch": n, b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    _dump(folder / "batches.meta", meta, py2)
    all_data, all_labels = [], []
    for number, name in enumerate(names, 1):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch_label = f"{'testing' if split == 'test' else 'training'} batch {number} of {len(names)}"
        _dump(folder / name, {b"batch_label": batch_label.encode(), b"labels": labels, b"data": data,
                              b"filenames": [f"image_{number}_{i:05d}.png".encode() for i in range(n)]}, py2)
        all_data.append(data)
        all_labels.append(labels)
    return np.concatenate(all_data), np.concatenate(all_labels).astype(np.int64)
