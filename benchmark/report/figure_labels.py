"""What a saliency-grid row shows besides the maps: the sample's ground-truth evidence and its caption.

The run keeps, next to each kept image ``<maps_dir>/images/<index>.npy``
(:class:`callbacks.PerSampleWriter`), a sidecar written by :func:`write_sidecar`:

* ``<index>.json`` -- one line, sorted keys, floats rounded (probability to 4 decimals, boxes to 2)::

      {"boxes": [[x1, y1, x2, y2], ...] | null, "id": "val_00000012", "index": 12, "label": 0 | null,
       "mask": "12.mask.npy" | null, "prediction": 1, "probability": 0.9132, "target": 0, "version": 1}

  ``target`` is the explained class, ``label`` the annotated one (null when the data has none),
  ``boxes`` the boxes of the explained class (xyxy pixel edges in the transformed image's pixels; ``[]``:
  the sample is annotated but has no box of that class; null: no annotation);
* ``<index>.mask.npy`` -- uint8 ``(H, W)``, 1 on the instance masks of the explained class (only when the
  data has masks);
* ``classes.json`` -- once per folder, ``{"classes": [name, ...]}`` in label order (only when the
  datamodule names its classes, see :func:`class_names_of`).

:func:`read_sidecar` reads them back (None for a folder written before sidecars existed: the grid then
draws today's ``#<index>`` labels and no outline); :func:`caption_parts` makes a row's caption and
:func:`outline_segments` / :func:`box_segments` the outline of its evidence.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from benchmark.runner.folder import atomic_write

__all__ = ["CLASSES_FILE", "RowInfo", "box_segments", "caption_parts", "caption_text", "class_name",
           "class_names_of", "outline_segments", "read_sidecar", "shorten", "write_class_names", "write_sidecar"]

#: Class names of a maps folder, once per ``images/`` folder.
CLASSES_FILE = "classes.json"
_VERSION = 1
_ID_CHARS, _NAME_CHARS = 24, 18  # a caption's id and class names are cut to these lengths
_SEP = " · "

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class RowInfo:
    """One kept sample as :func:`read_sidecar` reads it back (see the module docstring for the fields)."""

    index: int
    sample_id: str
    target: int
    prediction: int
    probability: Optional[float] = None
    label: Optional[int] = None
    boxes: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    class_names: Optional[Tuple[str, ...]] = None

    @property
    def wrong(self) -> bool:
        """The top-1 prediction differs from the annotated label (the explained class when there is no label)."""
        return self.prediction != (self.target if self.label is None else self.label)


def _dump(data: Any) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False) + "\n"


def _npy(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_sidecar(images_dir: PathLike, index: int, *, sample_id: str, target: int, prediction: int,
                  probability: Optional[float] = None, label: Optional[int] = None,
                  boxes: Optional[Any] = None, mask: Optional[Any] = None) -> Path:
    """Write the sidecar of kept image ``index`` (see the module docstring); deterministic bytes.

    Args:
        images_dir: the ``images/`` folder of one backbone's maps.
        index: dataset index of the kept image.
        sample_id, target, prediction, probability, label: the sample's id, explained class, top-1 class,
            top-1 probability and annotated class (None: unlabelled).
        boxes: ``(N, 4)`` xyxy boxes of the explained class (None: the sample has no annotation).
        mask: ``(H, W)`` evidence mask of the explained class (None: the data has no masks).

    Returns:
        The path of ``<index>.json``.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> path = write_sidecar(folder, 3, sample_id="val_3", target=1, prediction=2, probability=0.912345,
        ...                      label=1, boxes=[[1, 2, 5.004, 6]])
        >>> print(path.read_text(), end="")
        {"boxes": [[1.0, 2.0, 5.0, 6.0]], "id": "val_3", "index": 3, "label": 1, "mask": null, "prediction": 2, \
"probability": 0.9123, "target": 1, "version": 1}
    """
    images_dir, index = Path(images_dir), int(index)
    mask_name = None
    if mask is not None:  # first: a sidecar on disk is complete
        mask_name = f"{index}.mask.npy"
        data = _npy((np.asarray(mask) != 0).astype(np.uint8))
        atomic_write(images_dir / mask_name, lambda tmp: tmp.write_bytes(data))
    sidecar = {"version": _VERSION, "index": index, "id": str(sample_id), "target": int(target),
               "prediction": int(prediction), "label": None if label is None else int(label),
               "probability": None if probability is None else round(float(probability), 4),
               "boxes": None if boxes is None else [[round(float(v), 2) for v in box]
                                                    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)],
               "mask": mask_name}
    path = images_dir / f"{index}.json"
    text = _dump(sidecar)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def write_class_names(images_dir: PathLike, names: Sequence[str]) -> Path:
    """Write ``classes.json`` (``{"classes": [...]}``) into ``images_dir``.

    Examples:
        >>> import tempfile
        >>> write_class_names(tempfile.mkdtemp(), ["circle", "square"]).read_text()
        '{"classes": ["circle", "square"]}\\n'
    """
    path, text = Path(images_dir) / CLASSES_FILE, _dump({"classes": [str(n) for n in names]})
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def class_names_of(datamodule: Any) -> Optional[List[str]]:
    """Class names in label order of a datamodule (or its ``dataset``), or None when it names none.

    Looks for ``class_names`` (ImageNet's readable names), then ``classes`` (CIFAR, MNIST), on the datamodule
    and its dataset; the synthetic shapes are named by their outline (:data:`datamodules.shapes.CLASSES`).

    Examples:
        >>> from datamodules.synthetic import SyntheticShapesDataModule
        >>> class_names_of(SyntheticShapesDataModule(size=2, num_classes=3, image_size=32))
        ['circle', 'square', 'triangle']
        >>> class_names_of(None) is None
        True
    """
    for obj in (datamodule, getattr(datamodule, "dataset", None)):
        for attr in ("class_names", "classes"):
            names = getattr(obj, attr, None)
            if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
                return list(names)
    from datamodules.shapes import CLASSES
    from datamodules.synthetic import SyntheticShapes, SyntheticShapesDataModule

    if isinstance(datamodule, SyntheticShapesDataModule):
        return [outline for outline, _ in CLASSES[:datamodule.options["num_classes"]]]
    if isinstance(datamodule, SyntheticShapes):
        return [outline for outline, _ in CLASSES[:datamodule.num_classes]]
    return None


def read_sidecar(images_dir: PathLike, index: int) -> Optional[RowInfo]:
    """The sidecar of kept image ``index``, or None when there is none (a folder from before sidecars).

    Raises:
        ValueError: the sidecar is not valid JSON or lacks a field.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> read_sidecar(folder, 0) is None
        True
        >>> _ = write_sidecar(folder, 0, sample_id="a", target=1, prediction=1, boxes=[[0, 0, 2, 2]])
        >>> _ = write_class_names(folder, ["cat", "dog"])
        >>> info = read_sidecar(folder, 0)
        >>> info.sample_id, info.class_names, info.boxes.tolist(), info.mask, info.wrong
        ('a', ('cat', 'dog'), [[0.0, 0.0, 2.0, 2.0]], None, False)
    """
    images_dir = Path(images_dir)
    path = images_dir / f"{int(index)}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = images_dir / CLASSES_FILE
        classes = tuple(json.loads(names.read_text(encoding="utf-8"))["classes"]) if names.is_file() else None
        boxes = None if data.get("boxes") is None else np.asarray(data["boxes"], dtype=np.float64).reshape(-1, 4)
        mask = None if data.get("mask") is None else np.load(images_dir / data["mask"]).astype(bool)
        return RowInfo(int(data["index"]), str(data["id"]), int(data["target"]), int(data["prediction"]),
                       data.get("probability"), data.get("label"), boxes, mask, classes)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"Expected a figure sidecar in {str(path)!r} (see benchmark.report.figure_labels), but "
                         f"could not read it: {type(err).__name__}: {err}") from err


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters at its start (the end of an id or path tells samples apart).

    Examples:
        >>> shorten("img_00012", 24), shorten("train/n01440764/n01440764_10026.JPEG", 16)
        ('img_00012', '…0764_10026.JPEG')
    """
    return text if len(text) <= width else "…" + text[-(width - 1):] if width > 1 else text[-width:]


def class_name(k: int, names: Optional[Sequence[str]]) -> str:
    """Name of class ``k``: its first comma-separated name, cut to fit a caption; ``k`` itself without names.

    Examples:
        >>> class_name(0, ["tench, Tinca tinca"]), class_name(3, ["cat"]), class_name(1, None)
        ('tench', '3', '1')
    """
    if names is None or not 0 <= k < len(names):
        return str(k)
    name = names[k].split(",")[0].strip() or names[k]
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS - 1] + "…"


def caption_parts(info: RowInfo) -> List[Tuple[str, bool]]:
    """A row caption as ``(text, wrong)`` pieces: ``wrong`` marks the piece to draw in red.

    Examples:
        >>> info = RowInfo(12, "img_00012", target=0, prediction=1, probability=0.91, label=0,
        ...                class_names=("circle", "square"))
        >>> caption_parts(info)
        [('img_00012 · target: circle · ', False), ('pred: square ✗ (0.91)', True)]
        >>> caption_parts(RowInfo(3, "b", target=1, prediction=1, label=0))
        [('b · target: 1 · label: 0 · ', False), ('pred: 1 ✗', True)]
    """
    names = info.class_names
    head = f"{shorten(info.sample_id, _ID_CHARS)}{_SEP}target: {class_name(info.target, names)}{_SEP}"
    if info.label is not None and info.label != info.target:  # target="prediction": say what the truth is
        head += f"label: {class_name(info.label, names)}{_SEP}"
    pred = f"pred: {class_name(info.prediction, names)}" + (" ✗" if info.wrong else "")
    if info.probability is not None:
        pred += f" ({info.probability:.2f})"
    return [(head, False), (pred, info.wrong)]


def caption_text(info: RowInfo) -> str:
    """The caption of :func:`caption_parts` as one string.

    Examples:
        >>> caption_text(RowInfo(12, "img_00012", target=0, prediction=0, class_names=("circle", "square")))
        'img_00012 · target: circle · pred: circle'
    """
    return "".join(text for text, _ in caption_parts(info))


def outline_segments(mask: np.ndarray) -> np.ndarray:
    """Pixel-edge outline of a boolean ``(H, W)`` mask: ``(S, 2, 2)`` segments ``[[x0, y0], [x1, y1]]`` in
    :meth:`~matplotlib.axes.Axes.imshow` data coordinates (pixel ``(r, c)`` spans ``c ± 0.5``, ``r ± 0.5``);
    collinear neighbouring edges are joined.

    Examples:
        >>> outline_segments(np.array([[0, 0, 0], [0, 1, 1], [0, 0, 0]], bool)).tolist()
        [[[0.5, 0.5], [2.5, 0.5]], [[0.5, 1.5], [2.5, 1.5]], [[0.5, 0.5], [0.5, 1.5]], [[2.5, 0.5], [2.5, 1.5]]]
        >>> outline_segments(np.zeros((2, 2), bool)).shape
        (0, 2, 2)
    """
    mask = np.pad(np.asarray(mask, dtype=bool), 1)
    segments: List[List[List[float]]] = []
    for transpose in (False, True):  # horizontal edges (between rows), then vertical ones (between columns)
        grid = mask.T if transpose else mask
        edges = grid[1:, :] != grid[:-1, :]  # edges[i, j]: between padded rows i and i + 1, padded column j
        for i, row in enumerate(edges):
            cols = np.flatnonzero(row)
            if not cols.size:
                continue
            runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
            for run in runs:  # padded column j is pixel j - 1: it spans [j - 1.5, j - 0.5]
                line, start, stop = i - 0.5, run[0] - 1.5, run[-1] - 0.5
                segments.append([[line, start], [line, stop]] if transpose else [[start, line], [stop, line]])
    return np.asarray(segments, dtype=np.float64).reshape(-1, 2, 2)


def box_segments(boxes: np.ndarray) -> np.ndarray:
    """The four sides of each xyxy pixel-edge box as ``(4N, 2, 2)`` segments in imshow data coordinates.

    Examples:
        >>> box_segments(np.array([[1.0, 2.0, 4.0, 3.0]])).tolist()
        [[[0.5, 1.5], [3.5, 1.5]], [[3.5, 1.5], [3.5, 2.5]], [[3.5, 2.5], [0.5, 2.5]], [[0.5, 2.5], [0.5, 1.5]]]
    """
    segments = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - 0.5:
        corners = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
        segments += [[corners[k], corners[(k + 1) % 4]] for k in range(4)]
    return np.asarray(segments, dtype=np.float64).reshape(-1, 2, 2)
