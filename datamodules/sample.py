"""The sample contract shared by every datamodule, and the collate function.

One sample (a dict) after :func:`make_sample`:

* ``image`` ``(3, H, W)`` float32, normalised by the backbone's preprocessing;
* ``label`` int (the class explained by ``target="label"``), ``index`` int (global dataset index,
  stable across runs and world sizes), ``id`` str (the file name or generator id);
* ``boxes`` ``(N, 4)`` float32 xyxy in the transformed image's pixels, ``box_labels`` ``(N,)``
  int64, optional ``difficult`` ``(N,)`` bool (per box, the annotation's flag) and ``masks``
  ``(N, H, W)`` bool (one per box);
* optional ``difficult_item`` bool -- the item belongs to a "difficult" evaluation subset (TorchRay's
  EBP pointing-game list); collated to ``(B,)`` and given to metrics as ``MetricInputs.difficult``;
* ``counts`` -- the per-sample bad-input counts (:data:`COUNTS`).

A sample that could not be read (``on_error="skip"``) is ``{"skipped": True, "index", "id",
"error"}``. :func:`collate_samples` stacks the good samples, keeps the varying-length box
fields as lists, sums ``counts`` and lists the skipped samples under ``skipped``.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors

from benchmark.runtime.preprocessing import Preprocessing
from datamodules.boxes import BOX_COUNTS, transform_boxes
from datamodules.errors import AnnotationError

__all__ = ["COUNTS", "collate_samples", "make_sample", "skipped_sample"]

log = logging.getLogger(__name__)

#: Bad-input counters every batch carries (summed over its samples).
COUNTS = BOX_COUNTS + ("images_without_boxes", "images_skipped")

_LIST_KEYS = ("boxes", "box_labels", "difficult", "masks")


def make_sample(image: Image.Image, prep: Preprocessing, transform, *, label: int, index: int, sample_id: str,
                boxes: Optional[Tensor] = None, box_labels: Optional[Sequence[int]] = None,
                difficult: Optional[Sequence[bool]] = None, masks: Optional[Tensor] = None,
                difficult_item: Optional[bool] = None) -> Dict[str, Any]:
    """Preprocess one RGB image with its annotation into a contract sample.

    Args:
        image: RGB PIL image (see :func:`datamodules.images.load_image`).
        prep: the backbone's preprocessing (for the box geometry).
        transform: ``prep.transform()`` (built once per dataset, passed in).
        label, index, sample_id: class, global dataset index, file name.
        boxes, box_labels, difficult: the annotation (original pixels); ``None``: no annotation.
        masks: ``(N, H, W)`` bool instance masks in original pixels, one per box.
        difficult_item: the item's "difficult subset" flag (``None``: not part of the contract here).

    Examples:
        >>> prep = Preprocessing((3, 4, 4), 4, 4, (0.5,) * 3, (0.5,) * 3, "bilinear")
        >>> s = make_sample(Image.new("RGB", (8, 4)), prep, prep.transform(), label=1, index=7, sample_id="a.jpg",
        ...                 boxes=torch.tensor([[0., 0., 4., 4.], [6., 0., 8., 2.]]), box_labels=[1, 2])
        >>> s["image"].shape, s["boxes"].tolist(), s["box_labels"].tolist(), s["counts"]["boxes_clipped"]
        (torch.Size([3, 4, 4]), [[0.0, 0.0, 2.0, 4.0]], [1], 1)
    """
    counts = dict.fromkeys(COUNTS, 0)
    sample: Dict[str, Any] = {"label": int(label), "index": int(index), "id": str(sample_id), "counts": counts}
    if difficult_item is not None:
        sample["difficult_item"] = bool(difficult_item)
    if boxes is None:
        sample["image"] = transform(image)
        return sample
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    box_labels = torch.as_tensor(list(box_labels if box_labels is not None else []), dtype=torch.long)
    if len(box_labels) != len(boxes):
        raise AnnotationError(f"Expected one box label per box for {sample_id!r}, but got {len(box_labels)} "
                              f"labels for {len(boxes)} boxes.")
    size = (image.height, image.width)
    out, keep, box_counts = transform_boxes(boxes, size, prep)
    counts.update(box_counts)
    if masks is not None:
        masks = torch.as_tensor(masks, dtype=torch.bool)
        if masks.shape != (len(boxes), *size):
            raise AnnotationError(f"Expected `masks` of shape {(len(boxes), *size)} for {sample_id!r}, but "
                                  f"got {tuple(masks.shape)}.")
        sample["image"], masks = transform(image, tv_tensors.Mask(masks))
        sample["masks"] = masks.as_subclass(Tensor)[keep]
    else:
        sample["image"] = transform(image)
    sample.update(boxes=out, box_labels=box_labels[keep])
    if difficult is not None:
        sample["difficult"] = torch.as_tensor(list(difficult), dtype=torch.bool)[keep]
    counts["images_without_boxes"] = int(len(out) == 0)
    return sample


def skipped_sample(index: int, sample_id: str, error: BaseException) -> Dict[str, Any]:
    """The marker a dataset returns for an unreadable sample under ``on_error="skip"`` (logged)."""
    log.warning("Skipping sample %d (%s): %s", index, sample_id, error)
    return {"skipped": True, "index": int(index), "id": str(sample_id), "error": f"{type(error).__name__}: {error}"}


def collate_samples(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Collate contract samples into a batch dict.

    ``image``/``label``/``index`` are stacked, ``id`` and the box fields are lists (boxes vary in
    number), ``counts`` are summed, and unreadable samples are listed under ``skipped`` (a batch
    of only skipped samples has no ``image``).

    Examples:
        >>> a = {"image": torch.zeros(3, 2, 2), "label": 1, "index": 4, "id": "a", "counts": {"boxes_clipped": 1}}
        >>> b = {"skipped": True, "index": 5, "id": "b", "error": "CorruptImageError: bad"}
        >>> batch = collate_samples([a, b])
        >>> batch["image"].shape, batch["index"].tolist(), batch["counts"]["images_skipped"], batch["skipped"]
        (torch.Size([1, 3, 2, 2]), [4], 1, [{'index': 5, 'id': 'b', 'error': 'CorruptImageError: bad'}])
    """
    good = [s for s in samples if not s.get("skipped")]
    skipped = [{k: s[k] for k in ("index", "id", "error")} for s in samples if s.get("skipped")]
    counts = dict.fromkeys(COUNTS, 0)
    for s in good:
        for key, value in s.get("counts", {}).items():
            counts[key] = counts.get(key, 0) + int(value)
    counts["images_skipped"] = len(skipped)
    batch: Dict[str, Any] = {"counts": counts, "skipped": skipped}
    if not good:
        return batch
    batch["image"] = torch.stack([s["image"] for s in good])
    batch["label"] = torch.tensor([s["label"] for s in good], dtype=torch.long)
    batch["index"] = torch.tensor([s["index"] for s in good], dtype=torch.long)
    batch["id"] = [s["id"] for s in good]
    if all("difficult_item" in s for s in good):
        batch["difficult_item"] = torch.tensor([s["difficult_item"] for s in good], dtype=torch.bool)
    for key in _LIST_KEYS:
        present = [key in s for s in good]
        if any(present) and not all(present):
            raise ValueError(f"Expected every sample of a batch to have `{key}` or none to, but got "
                             f"{sum(present)} of {len(good)}.")
        if all(present):
            batch[key] = [s[key] for s in good]
    return batch
