"""VOC2007's segmentation subset: per-object masks for :class:`~datamodules.voc.VOC2007` (``segmentation=True``).

Layout (the devkit's; ``VOCtrainval_06-Nov-2007.tar`` holds the ``train``/``val``/``trainval`` part,
``VOCtest_06-Nov-2007.tar`` the ``test`` part -- 422 and 210 segmented images)::

    VOC2007/
    |-- Annotations/000032.xml              the boxes, class names and difficult flags, as without segmentation
    |-- ImageSets/Segmentation/test.txt     ids of the segmented images (train, val, trainval, test)
    |-- JPEGImages/000032.jpg
    |-- SegmentationClass/000032.png        palette PNG: pixel value c = class c - 1 of VOC_CLASSES, 0 background
    `-- SegmentationObject/000032.png       palette PNG: pixel value k = the k-th <object> of the XML, 0 background

In both PNGs 255 is "void" (the border drawn around every object, and regions the annotators left
undecided). The palette indices are read, not the colours (PIL mode ``P``, or ``L``).

Masks: object ``k``'s mask is ``SegmentationObject == k``, one per XML object in the XML's order
(so ``masks[k - 1]`` goes with ``boxes[k - 1]``); an object with no pixels gets an empty mask.
**Void policy:** void pixels belong to no object's mask. The masks mark no ignore region, so PxAP
(which scores every pixel outside the mask as background) counts void pixels as background.

Cross-check: every pixel of object ``k`` must carry, in ``SegmentationClass``, the class of the XML's
``k``-th ``<name>``, and no pixel may hold an object index beyond the XML's object count; either
mismatch raises :class:`~datamodules.errors.AnnotationError` naming the files, the object and both
classes. A PNG whose size differs from the JPEG's raises the same error, an undecodable one
:class:`~datamodules.images.CorruptImageError`.
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datamodules.errors import AnnotationError
from datamodules.images import CorruptImageError

__all__ = ["SEGMENTATION_HELP", "load_object_masks", "object_masks", "segmentation_paths",
           "segmentation_split_file"]

_FOLDERS = ("SegmentationObject", "SegmentationClass")

SEGMENTATION_HELP = """VOC2007(segmentation=True) expects the devkit's segmentation subset next to the detection one:
  VOCdevkit/
  `-- VOC2007/
      |-- Annotations/000032.xml ...
      |-- ImageSets/Segmentation/test.txt   (train.txt, val.txt, trainval.txt, test.txt: ids of segmented images)
      |-- JPEGImages/000032.jpg ...
      |-- SegmentationClass/000032.png ...  (palette PNGs: class index per pixel)
      `-- SegmentationObject/000032.png ... (palette PNGs: object index per pixel, in the XML's order)
VOCtrainval_06-Nov-2007.tar holds SegmentationObject/, SegmentationClass/ and ImageSets/Segmentation/ of
train/val/trainval, VOCtest_06-Nov-2007.tar those of test: extract both into the same VOCdevkit/."""


def segmentation_split_file(base: str, split: str) -> str:
    """``ImageSets/Segmentation/<split>.txt`` of the ``VOC2007`` folder ``base``, after checking the mask folders.

    Raises:
        FileNotFoundError: a mask folder or the split file is missing (the message shows the layout).
    """
    for folder in _FOLDERS:
        if not os.path.isdir(os.path.join(base, folder)):
            raise FileNotFoundError(f"Missing folder {os.path.join(base, folder)!r}.\n{SEGMENTATION_HELP}")
    split_file = os.path.join(base, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(f"Missing split file {split_file!r}.\n{SEGMENTATION_HELP}")
    return split_file


def segmentation_paths(base: str, image_id: str) -> Tuple[str, str]:
    """``(SegmentationObject/<id>.png, SegmentationClass/<id>.png)``; ``FileNotFoundError`` if one is missing."""
    paths = tuple(os.path.join(base, folder, f"{image_id}.png") for folder in _FOLDERS)
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Segmented image {image_id!r} has no mask file {path!r}.\n{SEGMENTATION_HELP}")
    return paths  # type: ignore[return-value]


def _read_indices(path: str) -> np.ndarray:
    """The ``(H, W)`` uint8 palette indices of a ``P``/``L`` PNG."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("P", "L"):
                raise AnnotationError(f"{path!r}: expected a palette (mode P) PNG of indices, but got mode "
                                      f"{image.mode!r}.")
            return np.array(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, AnnotationError):
            raise
        raise CorruptImageError(f"Cannot decode mask file {path!r}: {err}") from err


def object_masks(objects: np.ndarray, classes: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
                 where: str = "SegmentationObject/SegmentationClass") -> Tensor:
    """``(N, H, W)`` bool masks, ``objects == k`` for the ``N = len(labels)`` objects, cross-checked with ``classes``.

    Args:
        objects, classes: ``(H, W)`` index images (``SegmentationObject``, ``SegmentationClass``).
        labels: the XML's class index per object, in order (``classes`` holds ``label + 1``).
        class_names: names of the class indices (for the messages).
        where: the files, for the messages.

    Examples:
        >>> objects = np.array([[1, 1, 255], [0, 2, 255]], dtype=np.uint8)  # 255: void, in no mask
        >>> classes = np.array([[1, 1, 255], [0, 3, 255]], dtype=np.uint8)
        >>> object_masks(objects, classes, [0, 2], ["cat", "dog", "chair"]).int().tolist()
        [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 0]]]
        >>> object_masks(objects, classes, [0, 1], ["cat", "dog", "chair"], where="000032.png")
        Traceback (most recent call last):
        ...
        datamodules.errors.AnnotationError: 000032.png: object 2 is 'dog' in the XML but 'chair' (1 of its 1 pixels) \
in SegmentationClass.
    """
    if objects.shape != classes.shape:
        raise AnnotationError(f"{where}: the object PNG is {objects.shape[1]}x{objects.shape[0]} but the class PNG "
                              f"is {classes.shape[1]}x{classes.shape[0]}.")
    extra = sorted(set(np.unique(objects).tolist()) - set(range(len(labels) + 1)) - {255})
    if extra:
        raise AnnotationError(f"{where}: object indices {extra} in SegmentationObject, but the XML has "
                              f"{len(labels)} <object>s.")
    masks = np.stack([objects == k for k in range(1, len(labels) + 1)]) if len(labels) else \
        np.zeros((0, *objects.shape), dtype=bool)
    for k, (mask, label) in enumerate(zip(masks, labels), start=1):
        found = classes[mask]
        wrong = found != label + 1
        if wrong.any():
            value = int(found[wrong][0])
            name = "background" if value == 0 else "void" if value == 255 else \
                class_names[value - 1] if value <= len(class_names) else f"index {value}"
            raise AnnotationError(f"{where}: object {k} is {class_names[label]!r} in the XML but {name!r} "
                                  f"({int(wrong.sum())} of its {len(found)} pixels) in SegmentationClass.")
    return torch.from_numpy(masks)


def load_object_masks(base: str, image_id: str, labels: Sequence[int], class_names: Sequence[str],
                      size: Tuple[int, int]) -> Tensor:
    """Read the two PNGs of ``image_id`` into :func:`object_masks`; ``size`` is the JPEG's ``(width, height)``."""
    object_png, class_png = segmentation_paths(base, image_id)
    objects, classes = _read_indices(object_png), _read_indices(class_png)
    for path, array in ((object_png, objects), (class_png, classes)):
        if (array.shape[1], array.shape[0]) != tuple(size):
            raise AnnotationError(f"{path!r} is {array.shape[1]}x{array.shape[0]} but its image is "
                                  f"{size[0]}x{size[1]}.")
    return object_masks(objects, classes, labels, class_names, where=f"{object_png!r} / {class_png!r}")
