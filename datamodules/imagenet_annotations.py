"""ILSVRC2012 validation boxes from the official files, as a read-only mapping image id -> boxes.

* Boxes, ``synset xmin ymin xmax ymax`` per object: the Kaggle CSV ``LOC_val_solution.csv`` (header
  ``ImageId,PredictionString``, rows ``ILSVRC2012_val_00000001,n01751748 111 108 441 339 ``) or the official
  XML directory ``ILSVRC2012_bbox_val_v3/val/<ImageId>.xml`` (``<annotation>``, ``<size>``, ``<object>``
  with ``<name>`` and ``<bndbox><xmin>...``).
* Classes: ``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca``): box labels are positions in
  this file, the sorted-synset order of torchvision, timm and the Hugging Face ``imagenet-1k`` labels.

Boxes: ILSVRC coordinates are inclusive pixel indices (the devkit counts ``xmax - xmin + 1`` pixels), so
``box_convention="inclusive"`` (default, both formats) makes them the contract's pixel-edge boxes
``(xmin, ymin, xmax + 1, ymax + 1)``; ``"edges"`` keeps the numbers as they are.

Image ids: an id is looked up as given, without its extension (``ILSVRC2012_val_00000001.JPEG``), and
without the ``_<synset>`` suffix that the Hugging Face ``imagenet-1k`` loading script adds to validation
file names (``ILSVRC2012_val_00000001_n01751748.JPEG``, "image filepath format
<IMAGE_FILENAME>_<SYNSET_ID>.JPEG"); that synset must then be the class of every box of the entry.

Errors: a malformed mapping or CSV structure raises an ``AnnotationError`` (naming the file, line and
field) when read; a malformed CSV row or XML file, or an unknown synset, raises it only when that image
is looked up, so one bad entry costs one image (``on_error="skip"``).
"""
from __future__ import annotations

import csv
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from datamodules.base import as_path, check_choice
from datamodules.errors import AnnotationError

__all__ = ["BOX_CONVENTIONS", "ImageNetAnnotations", "ImageNetBoxes", "as_path", "check_annotation_paths",
           "image_id_candidates", "is_annotation_path", "parse_prediction_string", "read_synset_mapping"]

BOX_CONVENTIONS = ("inclusive", "edges")
_SYNSET = re.compile(r"n\d{8}")
_FIELDS = ("xmin", "ymin", "xmax", "ymax")
#: A hub ``imagenet-1k`` validation file stem: ``<ImageId>_<synset>``.
_HUB_STEM = re.compile(r"(?P<id>.+)_(?P<synset>n\d{8})")

PathLike = Union[str, os.PathLike]


class ImageNetBoxes(NamedTuple):
    """One image's entry: ``labels`` (N,) int64 class indices, ``boxes`` (N, 4) float64 pixel-edge xyxy,
    the XML ``<size>`` ``(width, height)`` or ``None``, and ``where`` it was read (file and line, or why absent)."""

    labels: np.ndarray
    boxes: np.ndarray
    size: Optional[Tuple[int, int]]
    where: str


def image_id_candidates(image_id: str) -> List[Tuple[str, Optional[str]]]:
    """The keys an image id is looked up under, in order, each with the synset its name carries (or ``None``).

    The id as given, without its extension, and -- for the hub ``imagenet-1k`` name ``<ImageId>_<synset>.JPEG``
    -- the ImageId without ``_<synset>`` (with that synset, which the boxes' class must match).

    Examples:
        >>> image_id_candidates("ILSVRC2012_val_00000001_n01751748.JPEG")[1:]
        [('ILSVRC2012_val_00000001_n01751748', None), ('ILSVRC2012_val_00000001', 'n01751748')]
        >>> image_id_candidates("ILSVRC2012_val_00000002")
        [('ILSVRC2012_val_00000002', None)]
    """
    stem = os.path.splitext(image_id)[0]
    keys: List[Tuple[str, Optional[str]]] = [(image_id, None), (stem, None)]
    match = _HUB_STEM.fullmatch(stem)
    if match:
        keys.append((match["id"], match["synset"]))
    return list(dict.fromkeys(keys))


def read_synset_mapping(path: PathLike) -> Tuple[List[str], List[str]]:
    """``(synsets, names)`` of ``LOC_synset_mapping.txt`` in file order (= class index order)."""
    names: Dict[str, str] = {}
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            synset, _, name = line.strip().partition(" ")
            if line.strip() and not _SYNSET.fullmatch(synset):
                raise AnnotationError(f"{path}, line {number}: expected 'n<8 digits> <names>', got {line.strip()!r}.")
            if synset in names:
                raise AnnotationError(f"{path}, line {number}: synset {synset} is listed twice.")
            if synset:
                names[synset] = name.strip()
    if not names:
        raise AnnotationError(f"{path}: no synsets (expected lines like 'n01440764 tench, Tinca tinca').")
    return list(names), list(names.values())


def parse_prediction_string(text: str, where: str) -> Tuple[List[str], np.ndarray]:
    """Split a Kaggle ``PredictionString`` into synsets and ``(N, 4)`` float64 boxes.

    Examples:
        >>> synsets, boxes = parse_prediction_string("n01751748 111 108 441 339 n01751748 0 5 20 30 ", "x")
        >>> synsets, boxes.tolist()
        (['n01751748', 'n01751748'], [[111.0, 108.0, 441.0, 339.0], [0.0, 5.0, 20.0, 30.0]])
    """
    values = text.split()
    if len(values) % 5:
        raise AnnotationError(f"{where}: field PredictionString has {len(values)} values, expected groups of 5.")
    numbers = [value for k, value in enumerate(values) if k % 5]
    for k, value in enumerate(numbers):
        try:
            float(value)
        except ValueError:
            raise AnnotationError(f"{where}: field PredictionString, box {k // 4 + 1}: {_FIELDS[k % 4]} {value!r} "
                                  "is not a number.") from None
    return values[0::5], np.array(numbers, dtype=np.float64).reshape(-1, 4)


def _read_csv(path: Path) -> Dict[str, Tuple[str, str, Optional[str]]]:
    """ImageId -> (where, PredictionString, error or None); each row is parsed when its image is looked up."""
    table: Dict[str, Tuple[str, str, Optional[str]]] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["ImageId", "PredictionString"]:
            raise AnnotationError(f"{path}, line 1: expected the header 'ImageId,PredictionString', but got {header}.")
        for row in reader:
            where, image_id = f"{path}, line {reader.line_num}", row[0].strip() if row else ""
            if not image_id and any(field.strip() for field in row):
                raise AnnotationError(f"{where}: field ImageId is empty.")
            error = "the ImageId appears a second time" if image_id in table else None
            if len(row) != 2:
                error = f"expected 2 fields (ImageId,PredictionString), but got {len(row)}"
            if image_id:
                table[image_id] = (where, row[-1], error)
    return table


def _xml_number(node: ET.Element, field: str, where: str) -> float:
    text = node.findtext(field)
    try:
        return float(text.strip())  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        got = "missing" if text is None else repr(text.strip())
        raise AnnotationError(f"{where}: <{field}> is {got}, expected a number.") from None


def _read_xml(path: Path, label: Callable[[str, str], int]) -> Tuple[np.ndarray, np.ndarray, Optional[Tuple]]:
    """``(labels, boxes as written, (width, height) or None)`` of one official XML file; ``label(synset, where)``."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise AnnotationError(f"{path}: malformed XML ({err}).") from None
    top = tree.getroot()
    if top.tag != "annotation":
        raise AnnotationError(f"{path}: expected an <annotation> root element, but got <{top.tag}>.")
    size = top.find("size")
    wh = None if size is None else tuple(int(_xml_number(size, f, f"{path}, <size>")) for f in ("width", "height"))
    labels, boxes = [], []
    for k, obj in enumerate(top.findall("object"), 1):
        where = f"{path}, <object> {k}"
        synset, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        if not synset or box is None:
            raise AnnotationError(f"{where}: <{'bndbox' if synset else 'name'}> is missing.")
        labels.append(label(synset, f"{where}, <name>"))
        boxes.append([_xml_number(box, field, f"{where}, <bndbox>") for field in _FIELDS])
    return np.array(labels, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4), wh


def check_annotation_paths(annotations_path: PathLike, synset_mapping: PathLike) -> Tuple[Path, Path]:
    """The two paths as ``Path``; a TypeError for a non-path, a FileNotFoundError for a missing file or directory."""
    annotations, mapping = as_path(annotations_path, "annotations"), as_path(synset_mapping, "synset_mapping")
    if not annotations.exists():
        raise FileNotFoundError(f"Annotations {str(annotations)!r} not found: expected the Kaggle LOC_val_solution.csv "
                                "or the XML directory ILSVRC2012_bbox_val_v3/val.")
    if not mapping.is_file():
        raise FileNotFoundError(f"Synset mapping {str(mapping)!r} not found: expected LOC_synset_mapping.txt "
                                "('n01440764 tench, Tinca tinca' per line, in class index order).")
    return annotations, mapping


def is_annotation_path(annotations: object, synset_mapping: object = None) -> bool:
    """Whether an ``annotations`` argument is a path (CSV or XML directory), checking that ``synset_mapping``
    comes with a path and only with one (no file is read).

    Examples:
        >>> is_annotation_path("LOC_val_solution.csv", "LOC_synset_mapping.txt"), is_annotation_path({}, None)
        (True, False)
        >>> is_annotation_path("LOC_val_solution.csv")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `annotations` is a path ('LOC_val_solution.csv'): pass `synset_mapping`, the ...
    """
    is_path = isinstance(annotations, (str, os.PathLike))
    if is_path and synset_mapping is None:
        raise ValueError(f"`annotations` is a path ({os.fspath(annotations)!r}): pass `synset_mapping`, the "
                         "LOC_synset_mapping.txt whose line order gives the box labels (imagenet-1k's label order).")
    if synset_mapping is not None and not is_path:
        raise ValueError("`synset_mapping` is only used when `annotations` is a path (a CSV file or XML directory).")
    return is_path


class ImageNetAnnotations(Mapping):
    """Read-only mapping ImageId -> ``(boxes, box_labels)`` of the ILSVRC2012 validation boxes.

    ``boxes`` is an ``(N, 4)`` float64 tensor of pixel-edge xyxy boxes in original pixels (see the module
    docstring), ``box_labels`` a list of N class indices in the order of ``synset_mapping``. An id may carry
    an extension (``ILSVRC2012_val_00000001.JPEG``) and the hub ``imagenet-1k`` suffix ``_<synset>``
    (:func:`image_id_candidates`; the synset must be the boxes' class); an id without an entry raises
    ``KeyError``, a malformed entry ``AnnotationError``. :meth:`find` also gives the XML ``<size>`` (to check
    the image against). The CSV is read once here; an XML file is parsed on each lookup.

    Args:
        annotations_path: ``LOC_val_solution.csv`` (a file) or the XML directory (``<ImageId>.xml`` files).
        synset_mapping: ``LOC_synset_mapping.txt``; its order gives the class indices (``classes``).
        box_convention: ``"inclusive"`` (``xmax``/``ymax`` are the last pixel: add 1) or ``"edges"``.

    Examples:
        >>> import tempfile
        >>> data = Path(tempfile.mkdtemp())
        >>> _ = (data / "LOC_synset_mapping.txt").write_text("n01440764 tench\\nn01443537 goldfish\\n")
        >>> _ = (data / "LOC_val_solution.csv").write_text(
        ...     "ImageId,PredictionString\\nILSVRC2012_val_00000003,n01443537 0 0 31 15 \\n")
        >>> ann = ImageNetAnnotations(data / "LOC_val_solution.csv", data / "LOC_synset_mapping.txt")
        >>> boxes, labels = ann["ILSVRC2012_val_00000003.JPEG"]
        >>> boxes.tolist(), labels, list(ann), ann.classes, ann.format
        ([[0.0, 0.0, 32.0, 16.0]], [1], ['ILSVRC2012_val_00000003'], ['n01440764', 'n01443537'], 'csv')
        >>> ann["ILSVRC2012_val_00000003_n01443537.JPEG"][1], "ILSVRC2012_val_00000004" in ann
        ([1], False)
        >>> ann["ILSVRC2012_val_00000003_n01440764.JPEG"]  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        datamodules.errors.AnnotationError: Image id 'ILSVRC2012_val_00000003_n01440764.JPEG' names synset n01440764 ...
        >>> import shutil; shutil.rmtree(data)
    """

    def __init__(self, annotations_path: PathLike, synset_mapping: PathLike, box_convention: str = "inclusive") -> None:
        self.box_convention = check_choice(box_convention, "box_convention", BOX_CONVENTIONS)
        self.path, self.synset_mapping = check_annotation_paths(annotations_path, synset_mapping)
        self.classes, self.class_names = read_synset_mapping(self.synset_mapping)
        self.class_to_idx = {synset: i for i, synset in enumerate(self.classes)}
        self.format = "csv" if self.path.is_file() else "xml"
        self._table = _read_csv(self.path) if self.format == "csv" else None
        self._xml_ids: Optional[List[str]] = None

    def _has(self, image_id: str) -> bool:
        return image_id in self._table if self._table is not None else (self.path / f"{image_id}.xml").is_file()

    def _key(self, image_id: object) -> Optional[Tuple[str, Optional[str]]]:
        """The stored ImageId for ``image_id`` (:func:`image_id_candidates`) and the synset its name carries."""
        if isinstance(image_id, str):
            for key, synset in image_id_candidates(image_id):
                if self._has(key):
                    return key, synset
        return None

    def _label(self, synset: str, where: str) -> int:
        if synset not in self.class_to_idx:
            raise AnnotationError(f"{where}: unknown synset {synset!r} (not in {self.synset_mapping}).")
        return self.class_to_idx[synset]

    def read(self, image_id: str) -> ImageNetBoxes:
        """The entry of ``image_id`` (exactly, no extension) with its source and XML size; no boxes when absent
        (``where`` then says why).

        Raises:
            AnnotationError: the entry is malformed or names a synset missing from the mapping.
        """
        if not self._has(image_id):
            where = (f"{self.path} (no ImageId {image_id!r})" if self._table is not None
                     else f"{self.path / image_id}.xml (no such file)")
            return ImageNetBoxes(np.zeros(0, np.int64), np.zeros((0, 4)), None, where)
        size = None
        if self._table is not None:
            where, text, error = self._table[image_id]
            if error:
                raise AnnotationError(f"{where}: {error}.")
            synsets, boxes = parse_prediction_string(text, where)
            labels = np.array([self._label(s, f"{where}, box {k + 1}") for k, s in enumerate(synsets)], np.int64)
        else:
            where = str(self.path / f"{image_id}.xml")
            labels, boxes, size = _read_xml(Path(where), self._label)
        boxes = boxes + np.array([0, 0, 1, 1]) * (self.box_convention == "inclusive")
        return ImageNetBoxes(labels, boxes, size, where)

    def find(self, image_id: str) -> Optional[ImageNetBoxes]:
        """The entry of an image id as a folder or stream names it (:func:`image_id_candidates`), with its XML
        ``<size>`` and source; ``None`` when no key matches.

        Raises:
            AnnotationError: the entry is malformed, names an unknown synset, or the id's ``_<synset>`` suffix
                (hub ``imagenet-1k`` names) is not the class of every box.
        """
        found = self._key(image_id)
        if found is None:
            return None
        key, synset = found
        entry = self.read(key)
        if synset is not None:
            label = self._label(synset, f"Image id {image_id!r}")
            other = sorted({self.classes[k] for k in entry.labels.tolist() if k != label})
            if other:
                raise AnnotationError(f"Image id {image_id!r} names synset {synset} but {entry.where} has boxes of "
                                      f"{', '.join(other)}: the image's name and its annotation disagree (a renamed "
                                      "image, or annotations of another release).")
        return entry

    def checked(self, image_id: str, image_size: Tuple[int, int], label: int = -1
                ) -> Optional[Tuple[Tensor, List[int]]]:
        """``(boxes, box_labels)`` of :meth:`find`, checked against the image as
        :class:`~datamodules.imagenet.ImageNetVal` does; ``None`` when no key matches.

        Args:
            image_id: the image's id (:func:`image_id_candidates`).
            image_size: the image's ``(width, height)``, compared with the XML ``<size>`` (the CSV has none).
            label: the image's class index in this mapping's order, or -1 (unknown: not checked).

        Raises:
            AnnotationError: as :meth:`find`; the size differs from ``<size>`` (boxes of resized copies are not
                supported); or a box's class is not ``label`` (ImageNet val has one class per image).
        """
        entry = self.find(image_id)
        if entry is None:
            return None
        if entry.size is not None and entry.size != tuple(image_size):
            raise AnnotationError(f"{entry.where}: <size> says {entry.size[0]}x{entry.size[1]} but image {image_id!r} "
                                  f"is {image_size[0]}x{image_size[1]}; boxes of resized copies are not supported. "
                                  "Use the full-size images, or pass on_error='skip' to skip (and count) them.")
        other = sorted({self.classes[k] for k in entry.labels.tolist() if k != label})
        if label >= 0 and other:
            name = self.classes[label] if label < len(self.classes) else "not a class of the mapping"
            raise AnnotationError(
                f"Image {image_id!r} has label {label} ({name}) but {entry.where} has boxes of {', '.join(other)}. "
                "ImageNet val has one class per image: pass the synset_mapping whose line order is the label order "
                f"(the sorted synsets for the hub imagenet-1k; now {self.synset_mapping}), or check that the id names "
                "this image.")
        return torch.from_numpy(entry.boxes), entry.labels.tolist()

    def __getitem__(self, image_id: str) -> Tuple[torch.Tensor, List[int]]:
        entry = self.find(image_id)
        if entry is None:
            raise KeyError(image_id)
        return torch.from_numpy(entry.boxes), entry.labels.tolist()

    def __contains__(self, image_id: object) -> bool:
        return self._key(image_id) is not None

    def _ids(self) -> List[str]:
        if self._table is not None:
            return list(self._table)
        if self._xml_ids is None:
            files = (e.name for e in os.scandir(self.path) if e.is_file() and e.name.endswith(".xml"))
            self._xml_ids = sorted(name[: -len(".xml")] for name in files)
        return self._xml_ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids())

    def __len__(self) -> int:
        return len(self._ids())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, {str(self.synset_mapping)!r}, "
                f"box_convention={self.box_convention!r})")
