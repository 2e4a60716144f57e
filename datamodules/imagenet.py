"""ILSVRC2012 validation images with their object boxes, read from the official files.

* Images (``root``): flat ``ILSVRC2012_val_00000001.JPEG ...`` or class folders ``<synset>/<file>.JPEG``
  (the ``valprep.sh`` layout); ``layout="auto"`` tells them apart.
* Boxes and classes: ``LOC_val_solution.csv`` (Kaggle) or the XML directory ``ILSVRC2012_bbox_val_v3/val``,
  and ``LOC_synset_mapping.txt``, read by :class:`~datamodules.imagenet_annotations.ImageNetAnnotations`
  (formats, the ``box_convention`` of the inclusive ILSVRC coordinates and the error policy are there).

Policy: ``index`` is the position in the full sorted listing (``number - 1`` for official names, else
the position among the files), whatever the subset or world size. The label is the class folder (checked
against the annotation) or, flat, the first box's synset. Unannotated images keep no boxes in class
folders; flat, their label is unknown: an ``AnnotationError``, like malformed CSV lines or XML files,
unknown synsets and an XML ``<size>`` other than the image's, raised when that image loads (so
``on_error="skip"`` skips just it).
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from benchmark.runtime.preprocessing import Preprocessing
from datamodules.base import AnnotationError, CamDataModule, CamDataset, as_preprocessing, check_choice
from datamodules.imagenet_annotations import (
    BOX_CONVENTIONS,
    ImageNetAnnotations,
    as_path,
    parse_prediction_string,
    read_synset_mapping,
)
from datamodules.images import load_image
from datamodules.sample import make_sample

__all__ = ["ImageNetAnnotations", "ImageNetVal", "ImageNetValDataModule", "parse_prediction_string",
           "read_synset_mapping"]

SOLUTION_CSV = "LOC_val_solution.csv"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
XML_DIRS = ("ILSVRC2012_bbox_val_v3/val", "Annotations/CLS-LOC/val")
LAYOUTS = ("auto", "flat", "folders")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_OFFICIAL = re.compile(r"ILSVRC2012_val_(\d{8})")

LAYOUT_HELP = """Expected an ILSVRC2012 validation set laid out like this (root = val/):
  data/
  |-- LOC_synset_mapping.txt     class order: "n01440764 tench, Tinca tinca" per line
  |-- LOC_val_solution.csv       Kaggle boxes: "ImageId,PredictionString", or
  |-- ILSVRC2012_bbox_val_v3/
  |   `-- val/                   official boxes: ILSVRC2012_val_00000001.xml ...
  `-- val/
      |-- ILSVRC2012_val_00000001.JPEG ...               flat, or
      `-- n01440764/ILSVRC2012_val_00000293.JPEG ...     class folders (valprep.sh)
Found in root or up to 4 folders above it, or pass `annotations=` (CSV or XML folder), `synset_mapping=`."""

PathLike = Union[str, os.PathLike]
Prep = Union[Preprocessing, Mapping[str, Any], str, None]
Ids = Union[PathLike, Sequence[str], None]
OptPath = Optional[PathLike]


def _missing(what: str, looked: Sequence[Path]) -> FileNotFoundError:
    where = ", ".join(str(p) for p in looked)
    return FileNotFoundError(f"{what} not found (looked for {where}).\n{LAYOUT_HELP}")


def _resolve(root: PathLike, annotations: OptPath, mapping: OptPath) -> Tuple[Path, Path, Path]:
    """``(root, annotations, synset_mapping)``: check the given paths or find the default ones."""
    root = as_path(root, "root")
    if not root.is_dir():
        raise _missing(f"Image directory root={str(root)!r}", [root])
    above = [root, *list(root.resolve().parents)[:4]]
    if annotations is None:
        looked = [d / name for d in above for name in (SOLUTION_CSV, *XML_DIRS)]
        found = [p for p in looked if p.is_file() or (p.suffix != ".csv" and p.is_dir())]
        if not found:
            raise _missing(f"Annotations ({SOLUTION_CSV} or an XML directory)", looked)
        annotations = found[0]
    annotations = as_path(annotations, "annotations")
    if not annotations.exists():
        raise _missing(f"Annotations {str(annotations)!r}", [annotations])
    looked = [as_path(mapping, "synset_mapping")] if mapping is not None else [d / SYNSET_MAPPING for d in above]
    found = [p for p in looked if p.is_file()]
    if not found:
        raise _missing(f"Synset mapping ({SYNSET_MAPPING})", looked)
    return root, annotations, found[0]


def _list_images(root: Path, layout: str) -> Tuple[str, List[Tuple[str, str, Optional[str]]]]:
    """``(layout, [(file name, path relative to root, class folder or None)])`` sorted by file name."""
    def images(folder: Path) -> List[str]:
        return [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")
                and e.name.lower().endswith(IMAGE_SUFFIXES)]

    flat = images(root) if layout != "folders" else []
    folders: List[Tuple[str, str, Optional[str]]] = []
    if layout != "flat":
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.is_dir() and not entry.name.startswith("."):
                folders += [(name, f"{entry.name}/{name}", entry.name) for name in images(Path(entry.path))]
    if flat and folders:
        raise ValueError(f"{root} has images both directly and in class folders; pass layout='flat' or 'folders'.")
    entries = [(name, name, None) for name in flat] if flat else folders
    if not entries:
        raise _missing(f"ILSVRC2012 validation images ({'/'.join(IMAGE_SUFFIXES)}) in root={str(root)!r}", [root])
    twice = [s for s, n in Counter(os.path.splitext(name)[0] for name, _, _ in entries).items() if n > 1]
    if twice:
        raise ValueError(f"ImageIds {twice[:5]} appear more than once under {root} (e.g. .JPEG and .png).")
    return ("flat" if flat else "folders"), sorted(entries)


def _check_args(root: Any, annotations: Any, synset_mapping: Any, layout: Any, box_convention: Any, limit: Any,
                subset_size: Any, subset_seed: Any, ids: Any) -> None:
    """TypeError / ValueError for bad arguments, before any file is touched."""
    for name, value in (("root", root), ("annotations", annotations), ("synset_mapping", synset_mapping)):
        if value is not None or name == "root":
            as_path(value, name)
    check_choice(layout, "layout", LAYOUTS)
    check_choice(box_convention, "box_convention", BOX_CONVENTIONS)
    for name, value in (("limit", limit), ("subset_size", subset_size), ("subset_seed", subset_seed)):
        if (value is not None or name == "subset_seed") and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"Expected `{name}` to be an int, but got {type(value).__name__}.")
        if value is not None and name != "subset_seed" and value < 1:
            raise ValueError(f"Expected `{name}` to be an int > 0, but got {value!r}.")
    given = [name for name, v in (("limit", limit), ("subset_size", subset_size), ("ids", ids)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"Expected at most one of `limit`, `subset_size` and `ids`, but got {given}.")
    if ids is not None and not isinstance(ids, (str, os.PathLike)):
        if not isinstance(ids, Sequence) or not all(isinstance(i, str) for i in ids):
            raise TypeError("Expected `ids` to be a list of ImageIds (str) or a path to a text file of them.")


def _read_ids(ids: Ids) -> List[str]:
    """ImageIds (a file name's extension dropped) of a list or a text file with one per line."""
    if isinstance(ids, (str, os.PathLike)):
        path = Path(ids).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Id list {str(path)!r} does not exist (expected one ImageId per line).")
        ids = path.read_text(encoding="utf-8-sig").splitlines()
    ids = [i.strip() for i in ids if i.strip()]
    return [os.path.splitext(i)[0] if i.lower().endswith(IMAGE_SUFFIXES) else i for i in ids]


class ImageNetVal(CamDataset):
    """The ILSVRC2012 validation images (or a subset) with labels and boxes; see the module docstring.

    Args:
        root: the image directory (flat or class folders).
        annotations: ``LOC_val_solution.csv`` or the XML directory; default: the nearest of them in
            ``root`` or up to 4 folders above it (also Kaggle's ``Annotations/CLS-LOC/val``).
        synset_mapping: ``LOC_synset_mapping.txt``; default: the nearest in ``root`` or above it.
        layout: ``"auto"``, ``"flat"`` or ``"folders"``.
        limit / subset_size (with subset_seed) / ids -- at most one: the first ``limit`` images;
            a seeded random subset (index order); or these ImageIds (``ILSVRC2012_val_00000001`` or a
            file name), a list or a text file with one per line -- unknown ones raise a ValueError.
        box_convention: ``"inclusive"`` (``xmax``/``ymax`` are the last pixel: add 1) or ``"edges"``.
        preprocessing: the backbone's preprocessing (see :func:`~datamodules.base.as_preprocessing`).
        on_error: ``"raise"`` or ``"skip"`` unreadable images and malformed annotations.

    Attributes:
        box_table: the :class:`~datamodules.imagenet_annotations.ImageNetAnnotations` of ``annotations``.

    Examples:
        >>> import tempfile
        >>> from PIL import Image
        >>> data = Path(tempfile.mkdtemp())
        >>> _ = (data / "LOC_synset_mapping.txt").write_text("n01440764 tench\\nn01443537 goldfish\\n")
        >>> _ = (data / "LOC_val_solution.csv").write_text(
        ...     "ImageId,PredictionString\\nILSVRC2012_val_00000003,n01443537 0 0 31 15 \\n")
        >>> Image.new("RGB", (64, 32)).save(data / "ILSVRC2012_val_00000003.JPEG")
        >>> ds = ImageNetVal(data, preprocessing={"resize_size": 16, "crop_size": 16})  # CSV and mapping in root
        >>> s = ds[0]
        >>> s["id"], s["index"], s["label"], s["boxes"].tolist(), ds.classes
        ('ILSVRC2012_val_00000003.JPEG', 2, 1, [[0.0, 0.0, 8.0, 8.0]], ['n01440764', 'n01443537'])
        >>> import shutil; shutil.rmtree(data)
    """

    def __init__(self, root: PathLike, annotations: OptPath = None, synset_mapping: OptPath = None,
                 layout: str = "auto", limit: Optional[int] = None, subset_size: Optional[int] = None,
                 subset_seed: int = 0, ids: Ids = None, box_convention: str = "inclusive", preprocessing: Prep = None,
                 on_error: str = "raise") -> None:
        super().__init__(as_preprocessing(preprocessing), on_error)
        _check_args(root, annotations, synset_mapping, layout, box_convention, limit, subset_size, subset_seed, ids)
        self.box_convention = box_convention
        self.root, self.annotations, self.synset_mapping = _resolve(root, annotations, synset_mapping)
        self.box_table = ImageNetAnnotations(self.annotations, self.synset_mapping, box_convention)
        self.classes, self.class_names = self.box_table.classes, self.box_table.class_names
        self.class_to_idx, self.annotation_format = self.box_table.class_to_idx, self.box_table.format
        self.layout, entries = _list_images(self.root, layout)
        self.names, self._paths, self._folders = (list(column) for column in zip(*entries))
        self._stems = [os.path.splitext(name)[0] for name in self.names]
        numbers = [_OFFICIAL.fullmatch(stem) for stem in self._stems]
        self._index = [int(m.group(1)) - 1 for m in numbers] if all(numbers) else list(range(len(entries)))
        self.positions = self._select(limit, subset_size, subset_seed, ids)

    def _select(self, limit: Optional[int], subset_size: Optional[int], seed: int, ids: Any) -> List[int]:
        """Positions (into the sorted listing) of the selected images, in index order."""
        total = len(self.names)
        if subset_size is not None and subset_size > total:
            raise ValueError(f"Expected `subset_size` <= {total} (images under {self.root}), but got {subset_size}.")
        if subset_size is not None:
            return sorted(np.random.default_rng(seed).choice(total, size=subset_size, replace=False).tolist())
        if ids is None:
            return list(range(min(limit or total, total)))
        lookup, wanted = {stem: p for p, stem in enumerate(self._stems)}, _read_ids(ids)
        if not wanted:
            raise ValueError("Expected at least one ImageId in `ids`, but got none.")
        unknown = [i for i in wanted if i not in lookup]
        if unknown:
            raise ValueError(f"{len(unknown)} of the {len(wanted)} `ids` are not images under {self.root}: "
                             f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}.")
        return sorted({lookup[i] for i in wanted})

    def __len__(self) -> int:
        return len(self.positions)

    def sample_id(self, i: int) -> str:
        return self.names[self.positions[i]]

    def global_index(self, i: int) -> int:
        return self._index[self.positions[i]]

    def load(self, i: int) -> Dict[str, Any]:
        pos = self.positions[i]
        name, folder, path = self.names[pos], self._folders[pos], self.root / self._paths[pos]
        labels, boxes, size, where = self.box_table.read(self._stems[pos])
        if folder is not None:
            if folder not in self.class_to_idx:
                raise AnnotationError(f"{path}: class folder {folder!r} is not a synset of {self.synset_mapping}.")
            label = self.class_to_idx[folder]
            other = sorted({self.classes[k] for k in labels.tolist() if k != label})
            if other:  # ImageNet val has one class per image: every box's
                raise AnnotationError(f"{path}: class folder {folder} but {where} says {', '.join(other)}.")
        elif len(labels):
            label = int(labels[0])
        else:
            raise AnnotationError(f"{path}: no boxes in {where}, so the label is unknown (flat layout).")
        image = load_image(path)
        if size is not None and size != image.size:
            raise AnnotationError(f"{where}: <size> says {size[0]}x{size[1]} but {path} is "
                                  f"{image.width}x{image.height}; boxes of resized copies are not supported.")
        return make_sample(image, self.preprocessing, self.transform, label=label, index=self._index[pos],
                           sample_id=name, boxes=boxes, box_labels=labels.tolist())


class ImageNetValDataModule(CamDataModule):
    """Predict datamodule over :class:`ImageNetVal`: its arguments, plus ``batch_size`` and ``num_workers``
    (see :class:`~datamodules.base.CamDataModule`); they are saved as hyperparameters.

    Examples:
        >>> ImageNetValDataModule("/data/imagenet/val", subset_size=2510, batch_size=16).hparams.subset_size
        2510
    """

    PROVIDES = frozenset({"boxes"})

    def __init__(self, root: PathLike, annotations: OptPath = None, synset_mapping: OptPath = None,
                 layout: str = "auto", limit: Optional[int] = None, subset_size: Optional[int] = None,
                 subset_seed: int = 0, ids: Ids = None, box_convention: str = "inclusive", preprocessing: Prep = None,
                 batch_size: int = 32, num_workers: int = 0, on_error: str = "raise") -> None:
        super().__init__(preprocessing, batch_size, num_workers, on_error)
        _check_args(root, annotations, synset_mapping, layout, box_convention, limit, subset_size, subset_seed, ids)
        self.save_hyperparameters()

    def check_files(self) -> None:
        _resolve(self.hparams.root, self.hparams.annotations, self.hparams.synset_mapping)

    def build_dataset(self) -> ImageNetVal:
        hp = self.hparams
        return ImageNetVal(hp.root, hp.annotations, hp.synset_mapping, hp.layout, hp.limit, hp.subset_size,
                           hp.subset_seed, hp.ids, hp.box_convention, self.preprocessing, self.on_error)
