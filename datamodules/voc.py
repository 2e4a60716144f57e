"""PASCAL VOC2007 for the pointing game: one item per (image, class present).

Layout (the VOC devkit's; ``root`` may be ``VOC2007``, ``VOCdevkit`` or the folder holding it)::

    VOCdevkit/
    `-- VOC2007/
        |-- Annotations/000005.xml      one XML per image
        |-- ImageSets/Main/test.txt     image ids, one a line (train, val, trainval, test)
        `-- JPEGImages/000005.jpg

Annotations: ``<annotation>`` holds ``<size>`` (``<width>``, ``<height>``; optional, checked
against the decoded image) and one ``<object>`` per object with ``<name>`` (one of
:data:`VOC_CLASSES`), ``<difficult>`` (0/1, missing = 0) and ``<bndbox>`` ``xmin ymin xmax
ymax``. VOC boxes are 1-based inclusive pixel indices (the devkit: "top left pixel co-ordinates
(1, 1)"); they become 0-based pixel-edge xyxy ``(xmin - 1, ymin - 1, xmax, ymax)``
(:mod:`datamodules.boxes`), covering exactly the pixels TorchRay's ``voc_as_mask`` marks.

Items -- the pointing game of Zhang et al. ("Top-down Neural Attention by Excitation Backprop",
ECCV 2016 / IJCV 2018) as TorchRay's ``PointingGameBenchmark`` runs it: each (image, class
present) pair is one sample, images in split-file order and classes ascending within an image.
``index`` is the pair's position in that list (after the options below; the same in every run and
for any world size), ``id`` is ``"<image>.jpg#<class name>"`` (unique per item), ``label`` the
class index into :data:`VOC_CLASSES` -- the output order of a 20-way multi-label head, so a
user-supplied VOC-fine-tuned model with ``ExplainerModule(target="label")`` explains each present
class in turn. ``boxes``/``box_labels``/``difficult`` are all the objects of the image; the
module keeps the boxes of the target class (their union is the object, difficult ones included).

Options:

* ``include_difficult=False`` (TorchRay): a class whose objects are all ``difficult`` yields no
  item; ``True``: every class present yields one.
* ``difficult_subset``: TorchRay's EBP "difficult" list (``pointing_game_ebp_voc07_difficult.txt``),
  one line per image: the image id, then 20 tab-separated 0/1 flags in class order. Every item is
  kept; each carries ``difficult_item`` = its (image, class) pair is flagged 1 (a line with the id
  alone flags every class of the image; an image not listed flags none), so one run gives the
  pointing game on all items and on the difficult subset (``pointing_game_difficult_accuracy``).
* ``multi_instance``: only items whose class has at least 2 objects in the image (difficult ones
  counted), the multiple-instance setting of Grad-CAM++ (Chattopadhyay et al., WACV 2018, Sec. 6,
  Table 3).
* ``limit``: the first N items (annotations are parsed only until N items are found).
* ``segmentation``: the segmentation subset -- images from ``ImageSets/Segmentation/<split>.txt``, and each
  sample also carries ``masks`` (one per box, from ``SegmentationObject``; void pixels in none), the data
  PxAP needs; see :mod:`datamodules.voc_segmentation` for the layout and checks.

Bad input: a missing root, ``VOC2007`` folder, ``JPEGImages``/``Annotations`` folder or split file
raises ``FileNotFoundError`` showing the layout. The annotations are parsed at setup (images are
read only in ``__getitem__``): a malformed XML or an unknown class raises :class:`AnnotationError`
naming the file and the element, a listed image without its XML or JPEG ``FileNotFoundError``;
with ``on_error="skip"`` such an image becomes one item (``id`` ``"<image>.jpg"``) that loads as a
skipped marker, so it reaches the results. A corrupt JPEG or a ``<size>`` that disagrees with the
image raise at load (or give a skipped marker per item). Boxes with ``x2 <= x1`` or outside the
image are clipped or dropped and counted by :func:`~datamodules.sample.make_sample`, per item: an
image's boxes are counted once for each of its items.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import IO, Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch

from benchmark.runtime.preprocessing import Preprocessing
from datamodules.base import (
    AnnotationError,
    CamDataModule,
    CamDataset,
    as_path,
    as_preprocessing,
    check_choice,
    check_positive_int,
)
from datamodules.images import load_image
from datamodules.sample import make_sample, skipped_sample
from datamodules.voc_segmentation import load_object_masks, segmentation_paths, segmentation_split_file

__all__ = ["SPLITS", "VOC2007", "VOC2007DataModule", "VOC_CLASSES", "VOCObjects", "find_voc2007",
           "parse_annotation", "read_difficult_subset"]

#: The 20 classes in the standard (alphabetical) order: the class index of a 20-way head.
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
SPLITS = ("train", "val", "trainval", "test")
_CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}
_FIELDS = ("xmin", "ymin", "xmax", "ymax")

LAYOUT_HELP = """Expected PASCAL VOC2007 laid out like (root = VOCdevkit/VOC2007, VOCdevkit or the folder holding it):
  VOCdevkit/
  `-- VOC2007/
      |-- Annotations/000005.xml ...
      |-- ImageSets/Main/test.txt       (train.txt, val.txt, trainval.txt, test.txt: image ids)
      `-- JPEGImages/000005.jpg ..."""

PathLike = Union[str, os.PathLike]


class VOCObjects(NamedTuple):
    """The objects of one annotation: 0-based pixel-edge xyxy boxes, class indices, difficult flags."""

    boxes: Tuple[Tuple[float, float, float, float], ...]
    labels: Tuple[int, ...]
    difficult: Tuple[bool, ...]
    size: Optional[Tuple[int, int]] = None  #: ``(width, height)`` from ``<size>``, if given


def _as_path(value: Any, name: str) -> str:
    return os.fspath(as_path(value, name))


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` to be one of (False, True), but got {value!r}.")
    return value


def _text(element: ET.Element, path: str, where: str) -> str:
    text = element.findtext(path)
    if text is None or not text.strip():
        raise AnnotationError(f"{where}: missing or empty <{path}>.")
    return text.strip()


def _number(element: ET.Element, path: str, where: str) -> float:
    text = _text(element, path, where)
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"{where}: <{path}> is {text!r}, not a number.") from None


def parse_annotation(source: Union[PathLike, IO], name: Optional[str] = None) -> VOCObjects:
    """Parse one VOC XML annotation (a path or a file object) into :class:`VOCObjects`.

    Raises:
        AnnotationError: malformed XML, a missing or non-numeric field, an unknown class (the
            message names the file, the object and the element).

    Examples:
        >>> import io
        >>> xml = ("<annotation><object><name>chair</name><difficult>1</difficult><bndbox><xmin>263</xmin>"
        ...        "<ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object></annotation>")
        >>> parse_annotation(io.StringIO(xml), "000005.xml")
        VOCObjects(boxes=((262.0, 210.0, 324.0, 339.0),), labels=(8,), difficult=(True,), size=None)
        >>> parse_annotation(io.StringIO(xml.replace("chair", "unicorn")), "000005.xml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        datamodules.errors.AnnotationError: 000005.xml, <object> 1: unknown class <name> 'unicorn'; expected one of ...
    """
    name = name if name is not None else repr(os.fspath(source))
    try:
        root = ET.parse(source).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"{name}: malformed XML ({err}).") from err
    if root.tag != "annotation":
        raise AnnotationError(f"{name}: expected the root element <annotation>, but got <{root.tag}>.")
    size = None
    if root.find("size") is not None:
        width, height = (_number(root, f"size/{f}", name) for f in ("width", "height"))
        size = (int(width), int(height))
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.iter("object"), start=1):
        where = f"{name}, <object> {k}"
        cls = _text(obj, "name", where)
        if cls not in _CLASS_INDEX:
            raise AnnotationError(f"{where}: unknown class <name> {cls!r}; expected one of {VOC_CLASSES}.")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise AnnotationError(f"{where}: <difficult> is {flag!r}, expected 0 or 1.")
        xmin, ymin, xmax, ymax = (_number(obj, f"bndbox/{f}", where) for f in _FIELDS)
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
        labels.append(_CLASS_INDEX[cls])
        difficult.append(flag == "1")
    return VOCObjects(tuple(boxes), tuple(labels), tuple(difficult), size)


def read_difficult_subset(source: Union[PathLike, IO]) -> Dict[str, Optional[Tuple[bool, ...]]]:
    """Read a TorchRay-style difficult-subset file: image id -> 20 class flags (``None``: all classes).

    Examples:
        >>> import io
        >>> subset = read_difficult_subset(io.StringIO("000001\\t" + "\\t".join("1" if c == 14 else "0"
        ...                                             for c in range(20)) + "\\n000004\\n"))
        >>> [VOC_CLASSES[c] for c, flag in enumerate(subset["000001"]) if flag], subset["000004"]
        (['person'], None)
    """
    lines, name = source, "difficult_subset"
    if isinstance(source, (str, os.PathLike)):
        path = _as_path(source, "difficult_subset")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Difficult-subset file {path!r} does not exist (expected TorchRay's format: "
                                    "an image id, then 20 tab-separated 0/1 class flags, per line).")
        with open(path, encoding="utf-8") as file:
            lines, name = file.read().splitlines(), repr(path)
    subset: Dict[str, Optional[Tuple[bool, ...]]] = {}
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        image_id = os.path.splitext(tokens[0])[0] if tokens[0].lower().endswith(".jpg") else tokens[0]
        flags = tokens[1:]
        if flags and (len(flags) != len(VOC_CLASSES) or set(flags) - {"0", "1"}):
            raise AnnotationError(f"{name}, line {number}: expected an image id alone or followed by "
                                  f"{len(VOC_CLASSES)} 0/1 class flags, but got {line.strip()!r}.")
        if image_id in subset:
            raise AnnotationError(f"{name}, line {number}: image {image_id!r} is listed twice.")
        subset[image_id] = tuple(f == "1" for f in flags) if flags else None
    return subset


def find_voc2007(root: PathLike, split: str = "test", segmentation: bool = False) -> str:
    """The ``VOC2007`` folder under ``root`` (itself, ``root/VOC2007`` or ``root/VOCdevkit/VOC2007``).

    Raises:
        FileNotFoundError: a folder or the split file (``ImageSets/Segmentation``'s and the mask folders with
            ``segmentation``) is missing (the message shows the layout).
    """
    root = _as_path(root, "root")
    check_choice(split, "split", SPLITS)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"VOC root {root!r} does not exist.\n{LAYOUT_HELP}")
    parts = ("JPEGImages", "Annotations", "ImageSets")
    candidates = (root, os.path.join(root, "VOC2007"), os.path.join(root, "VOCdevkit", "VOC2007"))
    base = next((c for c in candidates if any(os.path.isdir(os.path.join(c, p)) for p in parts)), None)
    if base is None:
        raise FileNotFoundError(f"No VOC2007 folder (with {', '.join(parts)}) found in {root!r}; looked in "
                                f"{', '.join(repr(c) for c in candidates)}.\n{LAYOUT_HELP}")
    for folder in parts[:2]:
        if not os.path.isdir(os.path.join(base, folder)):
            raise FileNotFoundError(f"Missing folder {os.path.join(base, folder)!r}.\n{LAYOUT_HELP}")
    split_file = os.path.join(base, "ImageSets", "Main", f"{split}.txt")
    if segmentation:
        segmentation_split_file(base, split)
    elif not os.path.isfile(split_file):
        raise FileNotFoundError(f"Missing split file {split_file!r}.\n{LAYOUT_HELP}")
    return base


class VOC2007(CamDataset):
    """PASCAL VOC2007 pointing-game items (see the module docstring for the conventions).

    Args:
        root: ``VOC2007``, ``VOCdevkit`` or the folder holding it.
        split: one of :data:`SPLITS` (``"test"`` is the pointing-game split).
        preprocessing: see :func:`~datamodules.base.as_preprocessing`.
        include_difficult: also make items of classes present only through difficult objects.
        difficult_subset: path of a TorchRay-style difficult-subset file, or None.
        multi_instance: only items whose class has >= 2 objects in the image.
        limit: keep the first ``limit`` items (None: all).
        on_error: ``"raise"`` or ``"skip"`` (see :class:`~datamodules.base.CamDataset`).
        segmentation: the segmentation subset's images, with per-object ``masks`` (module docstring).
    """

    classes = VOC_CLASSES

    def __init__(self, root: PathLike, split: str = "test",
                 preprocessing: Union[Preprocessing, Mapping[str, Any], str, None] = None,
                 include_difficult: bool = False, difficult_subset: Optional[PathLike] = None,
                 multi_instance: bool = False, limit: Optional[int] = None, on_error: str = "raise",
                 segmentation: bool = False) -> None:
        super().__init__(as_preprocessing(preprocessing), on_error)
        self.segmentation = _check_bool(segmentation, "segmentation")
        self.split = check_choice(split, "split", SPLITS)
        self.include_difficult = _check_bool(include_difficult, "include_difficult")
        self.multi_instance = _check_bool(multi_instance, "multi_instance")
        self.limit = None if limit is None else check_positive_int(limit, "limit")
        self.root = find_voc2007(root, split, self.segmentation)
        subset = None if difficult_subset is None else read_difficult_subset(_as_path(difficult_subset,
                                                                                      "difficult_subset"))
        split_file = segmentation_split_file(self.root, split) if self.segmentation else \
            os.path.join(self.root, "ImageSets", "Main", f"{split}.txt")
        with open(split_file, encoding="utf-8") as file:
            ids = [line.split()[0] for line in file if line.strip()]
        #: per kept image: (image id, its objects or the error that made it unreadable)
        self.images: List[Tuple[str, Union[VOCObjects, Exception]]] = []
        #: image id -> class flags of the difficult subset (``None`` flags: every class), or None
        self.subset = subset
        #: per item: (position in :attr:`images`, class index; -1 for an unreadable image)
        self.items: List[Tuple[int, int]] = []
        for image_id in ids:
            if self.limit is not None and len(self.items) >= self.limit:
                break
            try:
                objects = self._parse(image_id)
            except (AnnotationError, FileNotFoundError) as err:
                if self.on_error == "raise":
                    raise
                self.images.append((image_id, err))
                self.items.append((len(self.images) - 1, -1))
                continue
            classes = self._item_classes(objects)
            if classes:
                self.images.append((image_id, objects))
                self.items += [(len(self.images) - 1, c) for c in classes]
        if self.limit is not None:
            del self.items[self.limit:]

    def _parse(self, image_id: str) -> VOCObjects:
        xml = os.path.join(self.root, "Annotations", f"{image_id}.xml")
        if not os.path.isfile(xml):
            raise FileNotFoundError(f"Image {image_id!r} of split {self.split!r} has no annotation {xml!r}.")
        if not os.path.isfile(self.image_path(image_id)):
            raise FileNotFoundError(f"Image {image_id!r} of split {self.split!r} has no image file "
                                    f"{self.image_path(image_id)!r}.")
        if self.segmentation:
            segmentation_paths(self.root, image_id)
        return parse_annotation(xml, repr(xml))

    def _item_classes(self, objects: VOCObjects) -> List[int]:
        """The classes of the image that make items, ascending."""
        kept = []
        for c in sorted(set(objects.labels)):
            hard = [d for label, d in zip(objects.labels, objects.difficult) if label == c]
            if (self.include_difficult or not all(hard)) and (not self.multi_instance or len(hard) >= 2):
                kept.append(c)
        return kept

    def difficult_item(self, image_id: str, label: int) -> Optional[bool]:
        """Whether (image, class) is in the difficult subset; ``None`` without a subset file."""
        if self.subset is None:
            return None
        flags = self.subset.get(image_id, ())
        return image_id in self.subset and (flags is None or bool(flags[label]))

    def image_path(self, image_id: str) -> str:
        """``JPEGImages/<image_id>.jpg``."""
        return os.path.join(self.root, "JPEGImages", f"{image_id}.jpg")

    def __len__(self) -> int:
        return len(self.items)

    def sample_id(self, i: int) -> str:
        slot, label = self.items[i]
        name = f"{self.images[slot][0]}.jpg"
        return name if label < 0 else f"{name}#{VOC_CLASSES[label]}"

    def load(self, i: int) -> Dict[str, Any]:
        slot, label = self.items[i]
        image_id, objects = self.images[slot]
        if isinstance(objects, Exception):  # unreadable annotation under on_error="skip"
            return skipped_sample(self.global_index(i), self.sample_id(i), objects)
        image = load_image(self.image_path(image_id))
        if objects.size is not None and objects.size != image.size:
            raise AnnotationError(f"{image_id}.xml: <size> says {objects.size[0]}x{objects.size[1]} but "
                                  f"{self.image_path(image_id)!r} is {image.width}x{image.height}.")
        boxes = torch.tensor(objects.boxes, dtype=torch.float64).reshape(-1, 4)
        masks = load_object_masks(self.root, image_id, objects.labels, VOC_CLASSES, image.size) \
            if self.segmentation else None
        return make_sample(image, self.preprocessing, self.transform, label=label, index=self.global_index(i),
                           sample_id=self.sample_id(i), boxes=boxes, box_labels=objects.labels, masks=masks,
                           difficult=objects.difficult, difficult_item=self.difficult_item(image_id, label))


class VOC2007DataModule(CamDataModule):
    """Predict datamodule over :class:`VOC2007` (same arguments, plus the loader's).

    Args:
        root, split, include_difficult, difficult_subset, multi_instance, limit, segmentation: see :class:`VOC2007`;
            with ``segmentation=True`` the datamodule provides ``masks`` too (metrics such as ``pxap``).
        preprocessing, batch_size, num_workers, on_error: see :class:`~datamodules.base.CamDataModule`.

    Examples:
        >>> dm = VOC2007DataModule("/nonexistent/VOCdevkit", limit=4)
        >>> dm.prepare_data()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: VOC root '/nonexistent/VOCdevkit' does not exist.
        Expected PASCAL VOC2007 laid out like ...
    """

    PROVIDES = frozenset({"boxes"})

    def __init__(self, root: PathLike, split: str = "test", include_difficult: bool = False,
                 difficult_subset: Optional[PathLike] = None, multi_instance: bool = False,
                 limit: Optional[int] = None, preprocessing: Union[Preprocessing, Mapping[str, Any], str, None] = None,
                 batch_size: int = 32, num_workers: int = 0, on_error: str = "raise",
                 segmentation: bool = False) -> None:
        super().__init__(preprocessing, batch_size, num_workers, on_error)
        _as_path(root, "root")
        if _check_bool(segmentation, "segmentation"):
            self.PROVIDES = frozenset({"boxes", "masks"})  # read by provides() (the run's annotation check)
        check_choice(split, "split", SPLITS)
        _check_bool(include_difficult, "include_difficult")
        _check_bool(multi_instance, "multi_instance")
        if difficult_subset is not None:
            _as_path(difficult_subset, "difficult_subset")
        if limit is not None:
            check_positive_int(limit, "limit")
        self.save_hyperparameters()

    def check_files(self) -> None:
        hp = self.hparams
        find_voc2007(hp.root, hp.split, hp.segmentation)
        if hp.difficult_subset is not None and not os.path.isfile(_as_path(hp.difficult_subset, "difficult_subset")):
            raise FileNotFoundError(f"Difficult-subset file {os.fspath(hp.difficult_subset)!r} does not exist.")

    def build_dataset(self) -> VOC2007:
        hp = self.hparams
        return VOC2007(hp.root, hp.split, self.preprocessing, hp.include_difficult, hp.difficult_subset,
                       hp.multi_instance, hp.limit, self.on_error, hp.segmentation)
