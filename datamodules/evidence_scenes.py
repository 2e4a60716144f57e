"""Shape scenes with known evidence: ``SyntheticShapes(scene="evidence")`` (:mod:`datamodules.synthetic`).

Every scene is a pure function of ``(seed, split, index)``. A class is a *pair* -- an outline and a
fill texture (:data:`CLASSES`: class ``k`` is outline ``k`` filled with texture ``k``). A scene holds

* a textured random background and clutter that belongs to no class (irregular solid blobs, strokes);
* exactly **one object of the class** (2–3 with ``multi_instance``): the only evidence of the label;
* 0–3 **class-neutral distractors** drawn from the same vocabulary: outline ``i`` filled with texture
  ``j != i`` -- a pair that is no class. Each outline and each texture appears among the distractors
  independently of the label, so neither an outline nor a texture alone decides the class: a model that
  classifies well must find the object whose outline *and* texture agree.

The ground-truth evidence is therefore the class object's visible mask and box (``Scene.masks`` /
``Scene.boxes``; the distractors are in ``Scene.distractor_masks``). Difficulty varies per scene -- object
size (radius 14–35 % of the side, 12–28 % with several instances; distractors 7–20 %), the number of
distractors, and occlusion: a distractor may be drawn over part of the object (at most half of it is
hidden; the mask is what stays visible) -- so that the confidence-drop metrics are not saturated. The sizes
are chosen for the seeds' localization error: a CAM of a stride-16 backbone thresholded at 15 % of its
maximum yields a box of about 90 px on a 128 px image, so it reaches IoU >= 0.5 for objects of 64 px and
more (about 40 % of the scenes) and not for small ones, while the whole-image box of a constant map
(Fake-CAM) never does (objects stay under 90 px, IoU < 0.5).

The drawing (outlines, textures, background, clutter) is that of :mod:`datamodules.shapes`; boxes are
``xyxy`` pixel-edge coordinates of the visible mask.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from datamodules.shapes import CLASSES, Scene, _colour_pair, _iou, _mask_box, _scene_start, _shape_mask, _texture

__all__ = ["render_evidence_scene"]

_DISTRACTOR_P = (0.15, 0.3, 0.3, 0.25)  # 0, 1, 2 or 3 class-neutral distractors
# radii as fractions of the image side: class objects large enough that a stride-16 CAM can outline them
# (localization at IoU 0.5 is attainable), distractors smaller so they occlude without dominating
_OBJECT_RADIUS = (0.14, 0.35)
_OBJECTS_RADIUS = (0.12, 0.28)  # with ``multi_instance`` (2-3 objects must fit side by side)
_DISTRACTOR_RADIUS = (0.07, 0.20)
_MAX_HIDDEN = 0.5  # a distractor drawn over the object hides at most this share of it


def _place(size: int, count: int, objects: int, rng: np.random.Generator) -> List[Tuple[float, float, float]]:
    """Up to ``count`` (cx, cy, r) inside the image, the ``objects`` class objects first: objects overlap
    each other by box IoU < 0.1, a distractor overlaps any earlier placement by IoU < 0.25 (so it may
    cover part of an object)."""
    placed: List[Tuple[float, float, float]] = []
    for _ in range(50 * count):
        if len(placed) == count:
            break
        radius = _DISTRACTOR_RADIUS if len(placed) >= objects else _OBJECTS_RADIUS if objects > 1 else _OBJECT_RADIUS
        r = rng.uniform(*radius) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        limit = 0.1 if len(placed) < objects else 0.25
        if all(_iou((cx, cy, r), other) < limit for other in placed):
            placed.append((cx, cy, r))
    return placed


def _neutral_pair(num_classes: int, rng: np.random.Generator) -> Tuple[int, int]:
    """(outline, texture) with ``outline != texture``: drawn from the classes' vocabulary, no class."""
    outline = int(rng.integers(num_classes))
    texture = (outline + 1 + int(rng.integers(num_classes - 1))) % num_classes
    return outline, texture


def render_evidence_scene(seed: int, split: str, index: int, size: int = 128, num_classes: int = len(CLASSES),
                          multi_instance: bool = False) -> Scene:
    """Scene ``index`` of ``split`` with known evidence (module docstring); the arguments are those of
    :func:`datamodules.shapes.render_scene`, except that ``multi_instance`` draws 2 or 3 class objects
    instead of exactly one.

    Examples:
        >>> scene = render_evidence_scene(0, "val", 0)
        >>> CLASSES[scene.label], len(scene.boxes), [(CLASSES[o][0], CLASSES[t][1]) for o, t in scene.distractors]
        (('cross', 'diagonal stripes'), 1, [('square', 'dots'), ('star', 'horizontal stripes')])
    """
    rng, label, image = _scene_start(seed, split, index, size, num_classes)
    instances = int(rng.integers(2, 4)) if multi_instance else 1
    pairs = [(label, label)] * instances
    pairs += [_neutral_pair(num_classes, rng) for _ in range(int(rng.choice(4, p=_DISTRACTOR_P)))]
    shapes = []
    for (outline, texture), (cx, cy, r) in zip(pairs, _place(size, len(pairs), instances, rng)):
        mask = _shape_mask(CLASSES[outline][0], size, cx, cy, r, rng.uniform(0, 2 * math.pi))
        shapes.append((outline == texture, mask, (outline, texture), _colour_pair(rng), _texture(texture, size, rng)))
    order = [int(i) for i in rng.permutation(len(shapes))]
    if not _order_keeps_evidence(shapes, order):
        order = [i for i in order if not shapes[i][0]] + [i for i in order if shapes[i][0]]  # objects on top
    visible = []
    for i in order:
        _, mask, _, (on, off), pattern = shapes[i]
        image[mask] = np.where(pattern[..., None], on, off)[mask]
        for earlier in visible:
            earlier[1][...] &= ~mask
        visible.append((shapes[i][0], mask.copy(), shapes[i][2]))
    masks = [m for is_class, m, _ in visible if is_class and m.any()]
    distractors = [(m, pair) for is_class, m, pair in visible if not is_class and m.any()]
    boxes = np.array([_mask_box(m) for m in masks], dtype=np.float32).reshape(-1, 4)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    empty = np.zeros((0, size, size), dtype=bool)
    return Scene(image, label, boxes, np.stack(masks) if masks else empty,
                 np.stack([m for m, _ in distractors]) if distractors else empty, tuple(p for _, p in distractors))


def _order_keeps_evidence(shapes: List[tuple], order: List[int]) -> bool:
    """Whether drawing ``shapes`` in ``order`` leaves every class object at least half visible."""
    for k, i in enumerate(order):
        if shapes[i][0]:
            above = np.zeros_like(shapes[i][1])
            for j in order[k + 1:]:
                above |= shapes[j][1]
            if (shapes[i][1] & above).sum() > _MAX_HIDDEN * shapes[i][1].sum():
                return False
    return True
