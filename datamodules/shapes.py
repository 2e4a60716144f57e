"""Procedural shape scenes: the generator behind :mod:`datamodules.synthetic`.

Every scene is a pure function of ``(seed, split, index)``: a textured random background,
distractor clutter that belongs to no class (irregular solid blobs and strokes), and 1–3
instances of one object class drawn on top. The :data:`CLASSES` differ in outline *and*
texture (each class has its own fill pattern; clutter is never patterned), so a classifier must
look at the objects, and the exact instance boxes and masks come out of the renderer. (The harder scenes
of :mod:`datamodules.evidence_scenes`, where one object decides the class among class-neutral
distractors, reuse this module's drawing.)

Boxes are ``xyxy`` pixel-edge coordinates of each instance's visible mask (a mask covering
columns 3..5 gives ``x1 = 3, x2 = 6``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CLASSES", "SPLITS", "Scene", "render_scene"]

#: Object classes, in label order: (outline, fill texture).
CLASSES: Tuple[Tuple[str, str], ...] = (
    ("circle", "horizontal stripes"),
    ("square", "checkerboard"),
    ("triangle", "vertical stripes"),
    ("star", "dots"),
    ("cross", "diagonal stripes"),
    ("hexagon", "concentric rings"),
    ("ring", "grid lines"),
    ("crescent", "zigzag"),
)

#: Split names; each draws from its own random stream.
SPLITS = ("train", "val", "test")

_INSTANCE_P = (0.5, 0.3, 0.2)  # 1, 2 or 3 instances of the class


@dataclass
class Scene:
    """One rendered scene: ``image`` (H, W, 3) uint8, ``label``, ``boxes`` (N, 4) float32 xyxy and
    ``masks`` (N, H, W) bool of the N instances of the class (visible pixels); for the scenes with known
    evidence (:mod:`datamodules.evidence_scenes`) also ``distractor_masks`` (D, H, W) bool and the
    ``distractors``' ``(outline, texture)`` pairs (indices into :data:`CLASSES`, never equal)."""

    image: np.ndarray
    label: int
    boxes: np.ndarray
    masks: np.ndarray
    distractor_masks: Optional[np.ndarray] = None
    distractors: Tuple[Tuple[int, int], ...] = ()


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    sides = {"triangle": 3, "square": 4, "hexagon": 6}
    if kind in sides:
        n = sides[kind]
        return [(cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
                for k in range(n)]
    if kind == "star":
        return [(cx + (r if k % 2 == 0 else 0.45 * r) * math.cos(angle + math.pi * k / 5),
                 cy + (r if k % 2 == 0 else 0.45 * r) * math.sin(angle + math.pi * k / 5)) for k in range(10)]
    # cross: a plus sign of arm half-width w, rotated
    w = 0.33 * r
    pts = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w),
           (-w, r)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind in ("ring", "crescent"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if kind == "ring":
            q = 0.55 * r
            draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
        else:
            dx, dy = 0.45 * r * math.cos(angle), 0.45 * r * math.sin(angle)
            q = 0.85 * r
            draw.ellipse([cx + dx - q, cy + dy - q, cx + dx + q, cy + dy + q], fill=0)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=255)
    return np.asarray(canvas) > 127


def _texture(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Binary (size, size) fill pattern ``CLASSES[label][1]`` with a random period and phase."""
    period = rng.uniform(4.0, 7.0)
    ox, oy = rng.uniform(0, period, 2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = x + ox, y + oy
    half = period / 2
    pattern = CLASSES[label][1]
    if pattern == "horizontal stripes":
        return (y % period) < half
    if pattern == "vertical stripes":
        return (x % period) < half
    if pattern == "checkerboard":
        return ((x // half) + (y // half)) % 2 == 0
    if pattern == "dots":
        return ((x % period) - half) ** 2 + ((y % period) - half) ** 2 < (0.3 * period) ** 2
    if pattern == "diagonal stripes":
        return ((x + y) % period) < half
    if pattern == "concentric rings":
        cx, cy = size / 2 + ox, size / 2 + oy
        return (np.hypot(x - cx, y - cy) % period) < half
    if pattern == "grid lines":
        return ((x % period) < 1.5) | ((y % period) < 1.5)
    return ((y + half * np.abs(((x / half) % 2) - 1) * 2) % period) < half  # zigzag


def _colour_pair(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Two well-separated colours for a pattern's on/off cells."""
    a = rng.uniform(0, 255, 3)
    b = 255.0 - a
    b = b + (rng.uniform(-30, 30, 3))
    return a, np.clip(b, 0, 255)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(40, 215, 3)
    cells = int(rng.integers(3, 9))
    low = rng.normal(0, 35, (cells, cells, 3))
    low = np.stack([np.asarray(Image.fromarray(low[..., c].astype(np.float32), mode="F").resize(
        (size, size), Image.BILINEAR)) for c in range(3)], axis=-1)
    return base + low + rng.normal(0, 8, (size, size, 3))


def _clutter(image: np.ndarray, rng: np.random.Generator) -> None:
    size = image.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        cx, cy = rng.uniform(0, size, 2)
        if rng.random() < 0.5:  # irregular blob
            n = int(rng.integers(5, 10))
            radii = rng.uniform(0.04, 0.14, n) * size
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)], fill=255)
        else:  # stroke
            pts = [(cx, cy)] + [tuple(rng.uniform(0, size, 2)) for _ in range(int(rng.integers(1, 3)))]
            draw.line(pts, fill=255, width=int(rng.integers(2, 5)))
        mask = np.asarray(canvas) > 127
        image[mask] = rng.uniform(0, 255, 3) + rng.normal(0, 6, (int(mask.sum()), 3))


def _place(size: int, count: int, rng: np.random.Generator) -> List[Tuple[float, float, float]]:
    """Up to ``count`` (cx, cy, r) inside the image, their boxes overlapping by IoU < 0.1."""
    placed: List[Tuple[float, float, float]] = []
    scale = 1.0 if count == 1 else 0.8
    for _ in range(50 * count):
        if len(placed) == count:
            break
        r = rng.uniform(0.12, 0.22) * size * scale
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if all(_iou((cx, cy, r), other) < 0.1 for other in placed):
            placed.append((cx, cy, r))
    return placed


def _iou(a: Tuple[float, float, float], b: Tuple[float, float, float]) -> float:
    ax1, ay1, ax2, ay2 = a[0] - a[2], a[1] - a[2], a[0] + a[2], a[1] + a[2]
    bx1, by1, bx2, by2 = b[0] - b[2], b[1] - b[2], b[0] + b[2], b[1] + b[2]
    w, h = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = w * h
    return inter / ((2 * a[2]) ** 2 + (2 * b[2]) ** 2 - inter)


def render_scene(seed: int, split: str, index: int, size: int = 128, num_classes: int = len(CLASSES),
                 multi_instance: bool = False) -> Scene:
    """Render scene ``index`` of ``split`` (deterministic in ``(seed, split, index, size)``).

    Args:
        seed: dataset seed.
        split: one of :data:`SPLITS` (independent random streams).
        index: scene number (>= 0).
        size: image side in pixels.
        num_classes: number of classes used (the first ``num_classes`` of :data:`CLASSES`).
        multi_instance: draw 2 or 3 instances (the multi-instance split) instead of 1 to 3.

    Examples:
        >>> scene = render_scene(0, "val", 3, size=64)
        >>> scene.image.shape, scene.image.dtype, scene.masks.shape[1:], len(scene.boxes) == len(scene.masks)
        ((64, 64, 3), dtype('uint8'), (64, 64), True)
        >>> bool(np.array_equal(scene.image, render_scene(0, "val", 3, size=64).image))
        True
    """
    rng, label, image = _scene_start(seed, split, index, size, num_classes)
    p = np.array(_INSTANCE_P[1:] if multi_instance else _INSTANCE_P)
    count = int(rng.choice(len(p), p=p / p.sum())) + (2 if multi_instance else 1)
    kind = CLASSES[label][0]
    masks = []
    for cx, cy, r in _place(size, count, rng):
        mask = _shape_mask(kind, size, cx, cy, r, rng.uniform(0, 2 * math.pi))
        on, off = _colour_pair(rng)
        pattern = _texture(label, size, rng)[..., None]
        image[mask] = np.where(pattern, on, off)[mask]
        for earlier in masks:
            earlier &= ~mask
        masks.append(mask)
    masks = [m for m in masks if m.any()]
    boxes = np.array([_mask_box(m) for m in masks], dtype=np.float32).reshape(-1, 4)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(image, label, boxes, np.stack(masks) if masks else np.zeros((0, size, size), dtype=bool))


def _scene_start(seed: int, split: str, index: int, size: int, num_classes: int) -> Tuple[np.random.Generator, int,
                                                                                          np.ndarray]:
    """The scene's random stream (from ``(seed, split, index)``), its label, and the background with clutter."""
    if split not in SPLITS:
        raise ValueError(f"Expected `split` to be one of {SPLITS}, but got {split!r}.")
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
    label = int(rng.integers(num_classes))
    image = _background(size, rng)
    _clutter(image, rng)
    return rng, label, image


def _mask_box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
