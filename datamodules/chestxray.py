"""NIH ChestX-ray14 with the radiologists' boxes, for CAM localization on chest X-rays.

Data: Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised
Classification and Localization of Common Thorax Diseases", CVPR 2017. Protocol: Nagy, Nimara and Qian,
"Analysis and Evaluation of Grad-CAM Explanations" (a Grad-CAM reproduction study with a 14-way
DenseNet-121, CheXNet), which localises the boxed findings with maps binarised at 50 % of their maximum
(``metrics={"localization_error": {"threshold": 0.5}}``).

Layout (the NIH release; ``images_001.tar.gz`` ... ``images_012.tar.gz`` extract into one ``images/``)::

    root/
    |-- BBox_List_2017.csv     "Image Index,Finding Label,Bbox [x,y,w,h],,,": 984 boxes on 880 images
    |-- Data_Entry_2017.csv    optional: "Image Index,Finding Labels,...", findings "A|B" or "No Finding"
    `-- images/00000001_000.png ...   (or the PNGs directly in root, or ``images_dir=``)

Classes: :data:`CHESTXRAY14_CLASSES`, the output order of CheXNet's 14-way head (Rajpurkar et al.; its
released code's ``CLASS_NAMES``); ``classes=`` sets another order for a user's head. torchxrayvision uses
other orders: its models have 18 outputs in ``xrv.datasets.default_pathologies`` order and its NIH dataset
sorts the 14 labels alphabetically, so a torchxrayvision head needs ``classes=`` (its output names, in order).
The box file spells Infiltration "Infiltrate".

Items: one per (image, box class), images and classes in order of first appearance in ``BBox_List_2017.csv``
(boxes of one class in one image make one item). ``index`` is the position in that list, ``label`` the class's
position in ``classes``, ``boxes``/``box_labels`` all boxes of the image as xyxy ``(x, y, x + w, y + h)`` in
original pixels, moved with the image by :func:`~datamodules.sample.make_sample` (the module keeps the target
class's). ``id`` is ``"<image>#<class>"``, then ``"#<Finding Labels>"`` (as written) with ``Data_Entry_2017.csv``:
collate keeps no extra keys, so the multi-hot findings are :meth:`ChestXray14.multi_hot`, not a sample field.

Images: 1024 x 1024 grayscale PNGs (a few RGBA), RGB by :func:`~datamodules.images.load_image`. The default
:func:`chestxray_preprocessing` resizes them to 224 x 224 (nothing cropped), ImageNet mean/std, bilinear.

Bad input: a missing root, ``BBox_List_2017.csv`` or image folder raises ``FileNotFoundError`` showing the
layout; a wrong CSV header or an empty Image Index, :class:`AnnotationError` (file, line). A box row with an
unknown class, a missing or non-numeric x, y, w, h, a w or h <= 0, an image missing from the image folder or
(with ``Data_Entry_2017.csv``) not listed there is an :class:`AnnotationError` naming ``BBox_List_2017.csv``
and the line, for its item (image, class as written): ``on_error="raise"`` raises the first among the kept
items at setup; ``"skip"`` makes the item a skipped sample (listed and counted in the results); the image's
other items keep their good boxes. Boxes reaching outside the image are clipped or dropped and counted by
``make_sample``; a corrupt PNG fails at load (``on_error`` applies).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import IO, Any, Collection, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from benchmark.runtime.preprocessing import Preprocessing
from datamodules.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AnnotationError,
    CamDataModule,
    CamDataset,
    as_path,
    as_preprocessing,
    check_positive_int,
)
from datamodules.images import load_image
from datamodules.sample import make_sample

__all__ = ["BBOX_LIST", "CHESTXRAY14_CLASSES", "DATA_ENTRY", "BoxRow", "ChestXray14", "ChestXray14DataModule",
           "chestxray_preprocessing", "check_classes", "find_chestxray14", "read_bbox_list", "read_data_entry"]

#: The 14 findings in CheXNet's output order (not torchxrayvision's): the class index of a CheXNet-style head.
CHESTXRAY14_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                       "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
                       "Hernia")
BBOX_LIST = "BBox_List_2017.csv"
#: Data_Entry file names, first found wins (the 2020 re-release renamed it).
DATA_ENTRY = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
#: Spellings of the box file -> class names.
ALIASES = {"Infiltrate": "Infiltration"}
_FIELDS = ("x", "y", "w", "h")

LAYOUT_HELP = """Expected NIH ChestX-ray14 laid out like this (root = the extracted release):
  root/
  |-- BBox_List_2017.csv     "Image Index,Finding Label,Bbox [x,y,w,h],,," then one box per line
  |-- Data_Entry_2017.csv    optional: "Image Index,Finding Labels,..." (findings "A|B" or "No Finding")
  `-- images/                00000001_000.png ... (images_001..012.tar.gz extracted), or the PNGs in root
Or pass `images_dir=` (the folder holding the PNGs)."""

PathLike = Union[str, os.PathLike]
Prep = Union[Preprocessing, Mapping[str, Any], str, None]
Source = Union[PathLike, IO[str]]


class BoxRow(NamedTuple):
    """One line of ``BBox_List_2017.csv``: its class name (aliases resolved), xyxy box, or why it is unusable."""

    line: int
    image: str
    finding: str
    box: Optional[Tuple[float, float, float, float]]
    error: Optional[str]


def chestxray_preprocessing(size: int = 224) -> Preprocessing:
    """Resize the whole X-ray to ``size x size`` (no crop effect on square images), ImageNet mean/std, bilinear.

    Examples:
        >>> chestxray_preprocessing()
        Preprocessing(input_size=(3, 224, 224), resize_size=224, crop_size=224, mean=(0.485, 0.456, 0.406), \
std=(0.229, 0.224, 0.225), interpolation='bilinear', resize_mode='shorter')
    """
    size = check_positive_int(size, "size")
    return Preprocessing((3, size, size), size, size, IMAGENET_MEAN, IMAGENET_STD, "bilinear")


def check_classes(classes: Optional[Sequence[str]]) -> Tuple[str, ...]:
    """``classes`` as a tuple of unique names (``None``: :data:`CHESTXRAY14_CLASSES`).

    Examples:
        >>> check_classes(None)[:3], check_classes(["Mass", "Nodule"])
        (('Atelectasis', 'Cardiomegaly', 'Effusion'), ('Mass', 'Nodule'))
        >>> check_classes(["Mass", "Mass"])
        Traceback (most recent call last):
        ...
        ValueError: Expected `classes` to be non-empty unique names, but got ['Mass', 'Mass'].
    """
    if classes is None:
        return CHESTXRAY14_CLASSES
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not all(isinstance(c, str) for c in classes):
        raise TypeError(f"Expected `classes` to be a sequence of class names (str), but got {classes!r}.")
    twice = sorted({c for c in classes if list(classes).count(c) > 1})
    if not classes or not all(classes) or twice:
        raise ValueError(f"Expected `classes` to be non-empty unique names, but got {list(classes)!r}.")
    return tuple(classes)


def _rows(source: Source, name: Optional[str], header: Sequence[str]):
    """``(name, [(line, fields)])`` of a CSV whose first fields must be ``header``; blank lines left out."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, newline="", encoding="utf-8-sig") as handle:
            return _rows(handle, name or os.fspath(source), header)
    name, reader = name or "<stream>", csv.reader(source)
    first = next(reader, None)
    if first is None or [f.strip() for f in first[:len(header)]] != list(header):
        raise AnnotationError(f"{name}, line 1: expected the header to start with {','.join(header)!r}, but got "
                              f"{','.join(first or [])!r}.")
    return name, [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_bbox_list(source: Source, classes: Optional[Sequence[str]] = None, name: Optional[str] = None
                   ) -> List[BoxRow]:
    """Parse ``BBox_List_2017.csv`` (a path or a text stream) into :class:`BoxRow` s, in file order.

    A bad row is kept with its ``error`` (see the module docstring); a wrong header or an empty Image Index
    raises :class:`AnnotationError` naming the file and line.

    Examples:
        >>> text = ("Image Index,Finding Label,Bbox [x,y,w,h],,,\\n"
        ...         "00013118_008.png,Atelectasis,225.0,547.0,86.5,79.0,,,\\n"
        ...         "00014716_007.png,Infiltrate,10,20,30,0,,,\\n")
        >>> import io
        >>> rows = read_bbox_list(io.StringIO(text), name=BBOX_LIST)
        >>> rows[0]
        BoxRow(line=2, image='00013118_008.png', finding='Atelectasis', box=(225.0, 547.0, 311.5, 626.0), error=None)
        >>> rows[1].finding, rows[1].error
        ('Infiltration', 'field h is 0.0, expected > 0')
    """
    classes = check_classes(classes)
    name, rows = _rows(source, name, ("Image Index", "Finding Label"))
    out = []
    for line, row in rows:
        image, raw = row[0].strip(), row[1].strip() if len(row) > 1 else ""
        if not image:
            raise AnnotationError(f"{name}, line {line}: field Image Index is empty.")
        finding = raw if raw in classes else ALIASES.get(raw, raw)
        box, error = None, None
        if finding not in classes:
            error = f"unknown Finding Label {raw!r}; expected one of {classes} (or {sorted(ALIASES)})"
        elif len(row) < 6:
            error = f"expected 6 fields (Image Index, Finding Label, x, y, w, h), but got {len(row)}"
        else:
            x, y, w, h = values = [_float(text) for text in row[2:6]]
            fields = list(zip(_FIELDS, row[2:6], values))
            error = next((f"field {f} is {t.strip()!r}, not a finite number" for f, t, v in fields
                          if not math.isfinite(v)), None)
            error = error or next((f"field {f} is {v}, expected > 0" for f, _, v in fields[2:] if v <= 0), None)
            box = None if error else (x, y, x + w, y + h)
        out.append(BoxRow(line, image, finding, box, error))
    return out


def read_data_entry(source: Source, images: Optional[Collection[str]] = None, name: Optional[str] = None
                    ) -> Dict[str, Tuple[int, str]]:
    """Image -> ``(line, Finding Labels as written)`` of ``Data_Entry_2017.csv`` (only ``images`` when given).

    Examples:
        >>> text = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        ...         "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\\n"
        ...         "00000001_000.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,\\n")
        >>> import io
        >>> read_data_entry(io.StringIO(text))
        {'00000001_000.png': (2, 'Cardiomegaly|Emphysema')}
    """
    name, rows = _rows(source, name, ("Image Index", "Finding Labels"))
    wanted = None if images is None else set(images)
    table: Dict[str, Tuple[int, str]] = {}
    for line, row in rows:
        image = row[0].strip()
        if (wanted is None or image in wanted) and image not in table:
            table[image] = (line, row[1].strip() if len(row) > 1 else "")
    return table


def _check_args(root: Any, images_dir: Any, classes: Any, limit: Any) -> Tuple[Tuple[str, ...], Optional[int]]:
    """TypeError / ValueError for bad arguments, before any file is read; returns ``(classes, limit)``."""
    for name, value in (("root", root), ("images_dir", images_dir)):
        if value is not None or name == "root":
            as_path(value, name)
    return check_classes(classes), None if limit is None else check_positive_int(limit, "limit")


def _has_png(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.name.lower().endswith(".png") and e.is_file() for e in entries)


def find_chestxray14(root: PathLike, images_dir: Optional[PathLike] = None
                     ) -> Tuple[Path, Path, Path, Optional[Path]]:
    """``(root, images_dir, BBox_List_2017.csv, Data_Entry_2017.csv or None)``.

    Raises:
        FileNotFoundError: the root, the box list or the image folder is missing (the message shows the layout).
    """
    root = as_path(root, "root")
    if not root.is_dir():
        raise FileNotFoundError(f"ChestX-ray14 root {str(root)!r} does not exist.\n{LAYOUT_HELP}")
    bbox = root / BBOX_LIST
    if not bbox.is_file():
        raise FileNotFoundError(f"Missing box list {str(bbox)!r}.\n{LAYOUT_HELP}")
    if images_dir is not None:
        folder = as_path(images_dir, "images_dir")
        if not folder.is_dir():
            raise FileNotFoundError(f"Image folder images_dir={str(folder)!r} does not exist.\n{LAYOUT_HELP}")
    elif (root / "images").is_dir():
        folder = root / "images"
    elif _has_png(root):
        folder = root
    else:
        raise FileNotFoundError(f"No image folder: {str(root / 'images')!r} does not exist and {str(root)!r} holds "
                                f"no PNG images.\n{LAYOUT_HELP}")
    entry = next((root / n for n in DATA_ENTRY if (root / n).is_file()), None)
    return root, folder, bbox, entry


class ChestXray14(CamDataset):
    """ChestX-ray14 localization items (see the module docstring for the conventions and the error policy).

    Args:
        root: the release folder holding ``BBox_List_2017.csv`` (and ``images/``).
        images_dir: the folder of the PNGs (default: ``root/images``, else ``root``).
        classes: class names in the model's output order (default :data:`CHESTXRAY14_CLASSES`).
        limit: keep the first ``limit`` items (None: all).
        preprocessing: default :func:`chestxray_preprocessing`; see :func:`~datamodules.base.as_preprocessing`.
        on_error: ``"raise"`` or ``"skip"``.

    Examples:
        >>> import tempfile
        >>> from PIL import Image
        >>> data = Path(tempfile.mkdtemp())
        >>> _ = (data / BBOX_LIST).write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\\n"
        ...                                   "00000003_001.png,Infiltrate,16,8,16,32,,,\\n")
        >>> Image.new("L", (64, 64), 90).save(data / "00000003_001.png")
        >>> s = ChestXray14(data, preprocessing={"crop_size": 32})[0]  # PNGs in root; 64 -> 32: boxes halved
        >>> s["id"], s["label"], s["boxes"].tolist(), s["box_labels"].tolist(), s["image"].shape
        ('00000003_001.png#Infiltration', 3, [[8.0, 4.0, 16.0, 20.0]], [3], torch.Size([3, 32, 32]))
        >>> import shutil; shutil.rmtree(data)
    """

    def __init__(self, root: PathLike, images_dir: Optional[PathLike] = None,
                 classes: Optional[Sequence[str]] = None, limit: Optional[int] = None, preprocessing: Prep = None,
                 on_error: str = "raise") -> None:
        super().__init__(chestxray_preprocessing() if preprocessing is None else as_preprocessing(preprocessing),
                         on_error)
        self.classes, self.limit = _check_args(root, images_dir, classes, limit)
        self.root, self.images_dir, self.bbox_list, self.data_entry = find_chestxray14(root, images_dir)
        rows = read_bbox_list(self.bbox_list, self.classes)
        #: image -> (line, Finding Labels) of Data_Entry_2017.csv, or None without that file
        self.findings = None if self.data_entry is None else read_data_entry(self.data_entry, {r.image for r in rows})
        per_image: Dict[str, Dict[str, int]] = {}  # image -> class -> first line (both in file order)
        errors: Dict[Tuple[str, str], str] = {}
        #: image -> [(xyxy box, class index)] of its good rows
        self.boxes: Dict[str, List[Tuple[Tuple[float, ...], int]]] = {}
        for row in rows:
            per_image.setdefault(row.image, {}).setdefault(row.finding, row.line)
            if row.error:
                errors.setdefault((row.image, row.finding), f"{self.bbox_list}, line {row.line}: {row.error}.")
            else:
                self.boxes.setdefault(row.image, []).append((row.box, self.classes.index(row.finding)))
        #: per item: (image, class name)
        self.items: List[Tuple[str, str]] = [(im, c) for im, found in per_image.items() for c in found]
        del self.items[self.limit or len(self.items):]
        exists: Dict[str, bool] = {}
        for image, finding in self.items:
            where = f"{self.bbox_list}, line {per_image[image][finding]}: image {image!r}"
            if image not in exists:
                exists[image] = (self.images_dir / image).is_file()
            if not exists[image]:
                errors.setdefault((image, finding), f"{where} not found in {self.images_dir}.")
            elif self.findings is not None and image not in self.findings:
                errors.setdefault((image, finding), f"{where} is not listed in {self.data_entry}.")
        #: (image, class) -> the message of the AnnotationError that item raises
        self.errors = {key: errors[key] for key in self.items if key in errors}
        if self.errors and self.on_error == "raise":
            raise AnnotationError(next(iter(self.errors.values())) + " Pass on_error='skip' to skip such items "
                                  "(they are listed and counted in the results).")

    def __len__(self) -> int:
        return len(self.items)

    def sample_id(self, i: int) -> str:
        image, finding = self.items[i]
        entry = self.findings.get(image) if self.findings is not None else None
        return f"{image}#{finding}" + (f"#{entry[1]}" if entry else "")

    def multi_hot(self, i: int) -> Optional[torch.Tensor]:
        """``(len(classes),)`` float32 multi-hot of item ``i``'s image findings in Data_Entry (None: not listed).

        Names outside ``classes`` ("No Finding") set no entry.
        """
        entry = self.findings.get(self.items[i][0]) if self.findings is not None else None
        if entry is None:
            return None
        names = {n.strip() for n in entry[1].split("|")}
        return torch.tensor([float(c in names) for c in self.classes])

    def load(self, i: int) -> Dict[str, Any]:
        image_name, finding = self.items[i]
        if (image_name, finding) in self.errors:
            raise AnnotationError(self.errors[image_name, finding])
        image = load_image(self.images_dir / image_name)
        entries = self.boxes.get(image_name, [])
        boxes = torch.tensor([box for box, _ in entries], dtype=torch.float64).reshape(-1, 4)
        return make_sample(image, self.preprocessing, self.transform, label=self.classes.index(finding), index=i,
                           sample_id=self.sample_id(i), boxes=boxes, box_labels=[c for _, c in entries])


class ChestXray14DataModule(CamDataModule):
    """Predict datamodule over :class:`ChestXray14` (same arguments, plus the loader's).

    Args:
        root, images_dir, classes, limit: see :class:`ChestXray14`.
        preprocessing: default :func:`chestxray_preprocessing` (224 x 224, the whole image).
        batch_size, num_workers, on_error: see :class:`~datamodules.base.CamDataModule`.

    Examples:
        >>> dm = ChestXray14DataModule("/nonexistent/chestxray14", limit=4)
        >>> dm.preprocessing.resize_size, dm.preprocessing.crop_size
        (224, 224)
        >>> dm.prepare_data()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ChestX-ray14 root '/nonexistent/chestxray14' does not exist.
        Expected NIH ChestX-ray14 laid out like ...
    """

    PROVIDES = frozenset({"boxes"})

    def __init__(self, root: PathLike, images_dir: Optional[PathLike] = None,
                 classes: Optional[Sequence[str]] = None, limit: Optional[int] = None, preprocessing: Prep = None,
                 batch_size: int = 32, num_workers: int = 0, on_error: str = "raise") -> None:
        super().__init__(chestxray_preprocessing() if preprocessing is None else preprocessing, batch_size,
                         num_workers, on_error)
        _check_args(root, images_dir, classes, limit)
        self.save_hyperparameters()

    def check_files(self) -> None:
        find_chestxray14(self.hparams.root, self.hparams.images_dir)

    def build_dataset(self) -> ChestXray14:
        hp = self.hparams
        return ChestXray14(hp.root, hp.images_dir, hp.classes, hp.limit, self.preprocessing, self.on_error)
