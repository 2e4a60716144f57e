"""Connected components over a sweep of thresholds: a union-find forest that pixels and links join in decreasing
order of the threshold they exceed, shared by MaxBoxAcc (V1, the largest component's box) and MaxBoxAccV2 (every
component's box). One sort of the levels, then each threshold only touches what appears at it, instead of one
connected-component labelling per threshold.
"""
from __future__ import annotations

from typing import Iterator, List, Tuple

import torch
from torch import Tensor

__all__ = ["distinct", "edges", "hook", "jump", "largest_component_boxes", "starts", "sweep"]


def distinct(nodes: Tensor, slot: Tensor) -> Tensor:
    """``nodes`` without repeats (one occurrence kept, without sorting); ``slot`` is a scratch array over all nodes."""
    position = torch.arange(len(nodes), device=nodes.device)
    slot.index_copy_(0, nodes, position)
    return nodes.masked_select(slot.index_select(0, nodes) == position)


def jump(parent: Tensor, nodes: Tensor) -> Tensor:
    """Pointer jumping over ``nodes`` (every node of their paths must be among them): their roots, to which
    their pointers are set; ``log2(depth)`` rounds."""
    while True:
        up = parent.index_select(0, nodes)
        upper = parent.index_select(0, up)
        if torch.equal(upper, up):
            return up
        parent.index_copy_(0, nodes, upper)  # repeats write the same value


def hook(parent: Tensor, age: Tensor, best: Tensor, ru: Tensor, rv: Tensor) -> Tensor:
    """Merge the trees of the roots linked by ``(ru, rv)``; returns the new roots of ``cat([ru, rv])``.

    Each round hangs the younger root of every link still between two trees under the oldest root it
    is linked to (Shiloach-Vishkin hooking; ages decrease along a path, so there is no cycle), then
    jumps pointers over those roots (the only nodes of the paths made), until every link is inside a tree.
    """
    ends, half = torch.cat([ru, rv]), len(ru)
    roots = ends
    while True:
        ru, rv = roots[:half], roots[half:]
        crossing = ru != rv
        if not bool(crossing.any()):
            return roots
        ru, rv = ru.masked_select(crossing), rv.masked_select(crossing)
        older = age.index_select(0, ru) < age.index_select(0, rv)
        young, old = torch.where(older, rv, ru), torch.where(older, ru, rv)
        best.scatter_reduce_(0, young, age.index_select(0, old), reduce="amin")
        parent.index_copy_(0, young, best.index_select(0, young) % len(parent))  # repeats write the same value
        roots = jump(parent, ends)


def edges(batch: int, height: int, width: int, connectivity: int, device: torch.device) -> List[Tensor]:
    """``[u, v]``: flat indices of the neighbouring pixel pairs of ``batch`` images."""
    index = torch.arange(batch * height * width, device=device).view(batch, height, width)
    pairs = [(index[:, :, :-1], index[:, :, 1:]), (index[:, :-1, :], index[:, 1:, :])]
    if connectivity == 8:
        pairs += [(index[:, :-1, :-1], index[:, 1:, 1:]), (index[:, :-1, 1:], index[:, 1:, :-1])]
    return [torch.cat([p[side].reshape(-1) for p in pairs]) for side in (0, 1)]


def starts(values: Tensor, steps: int) -> List[int]:
    """``starts[L]``: where value ``L`` begins among ``values`` sorted ascending (length ``steps + 2``)."""
    counts = torch.bincount(values, minlength=steps + 1)
    return [0] + counts.cumsum(0).tolist()


def sweep(levels: Tensor, steps: int, connectivity: int) -> Iterator[Tuple[int, Tensor, Tensor, Tensor, Tensor]]:
    """The union-find sweep over ``(B, H, W)`` ``levels``, from the highest threshold down.

    ``levels[b, y, x]`` is how many of the ascending thresholds the pixel exceeds (it is foreground at threshold
    ``k`` iff ``k < level``). At each level the pixels and neighbour links that appear there join a union-find
    forest (pixels and links sorted by level once); merged roots hang under the oldest root of the group (then the
    lowest index), and one pointer jump over the forest makes every pixel point at its root again. Yields, per
    level, ``(level, dead, into, roots, box)``: the roots merged away there, the roots they went into (aligned), the
    distinct live roots touched there (new pixels and merged-into roots), and the ``(4, N)`` boxes (a root's
    column is its component's xyxy box, already merged). A caller keeps whatever else a root carries.
    """
    batch, height, width = levels.shape
    device, size = levels.device, levels.numel()
    flat = levels.reshape(-1)
    node = torch.arange(size, device=device)
    x, y = node % width, node // width % height
    box = torch.stack([x, y, x + 1, y + 1])
    parent = node.clone()
    u, v = edges(batch, height, width, connectivity, device)
    weight = torch.minimum(flat.index_select(0, u), flat.index_select(0, v))  # a link lives while both pixels do
    order = torch.argsort(weight, stable=True)
    u, v, weight = u.index_select(0, order), v.index_select(0, order), weight.index_select(0, order)
    pixels = torch.argsort(flat, stable=True)
    pixel_start, edge_start = starts(flat, steps), starts(weight, steps)
    age = (steps - flat) * size + node  # smaller = foreground since a higher threshold; unique
    best = age.clone()  # per root: the age of the root it is hooked under (its own while a root)
    slot = torch.empty_like(node)  # scratch for distinct
    none = node[:0]
    for level in range(steps, 0, -1):
        touched = [pixels[pixel_start[level]:pixel_start[level + 1]]]  # new pixels: roots of themselves
        ends = torch.cat([u[edge_start[level]:edge_start[level + 1]], v[edge_start[level]:edge_start[level + 1]]])
        ru, rv = parent.index_select(0, ends).chunk(2)  # every pixel points at its root at each level's start
        crossing = ru != rv
        dead = into = none
        if bool(crossing.any()):
            ends = torch.cat([ru.masked_select(crossing), rv.masked_select(crossing)])  # roots linked here
            dead = distinct(ends.masked_select(hook(parent, age, best, *ends.chunk(2)) != ends), slot)
            into = parent.index_select(0, dead)  # their new roots
            box[:2].scatter_reduce_(1, into.expand(2, -1), box[:2].index_select(1, dead), reduce="amin")
            box[2:].scatter_reduce_(1, into.expand(2, -1), box[2:].index_select(1, dead), reduce="amax")
            touched.append(into)
            parent = parent.index_select(0, parent)  # a dead root points at its new root: one jump restores that
        roots = torch.cat(touched)
        yield level, dead, into, distinct(roots.masked_select(parent.index_select(0, roots) == roots), slot), box


def largest_component_boxes(levels: Tensor, steps: int, connectivity: int = 4) -> Tensor:
    """``(B, steps, 4)`` float64 xyxy box of the largest component at each threshold (NaN when there is none).

    One :func:`sweep`; each root also keeps its component's size and first pixel in raster order. Sizes only
    grow, so an image's largest component at a threshold is the previous one or one of the roots touched there;
    ties go to the component whose first pixel comes first in raster order -- the smallest label of
    :func:`~benchmark.metrics.functional.localization.connected_components`, the rule of the per-threshold
    labelling, so the boxes are the same.

    Examples:
        >>> levels = torch.tensor([[[2, 0, 1], [2, 0, 1], [0, 0, 1]]])  # a 2-pixel and a 3-pixel column
        >>> largest_component_boxes(levels, 2)
        tensor([[[2., 0., 3., 3.],
                 [0., 0., 1., 2.]]], dtype=torch.float64)
    """
    batch, height, width = levels.shape
    device, plane = levels.device, height * width
    count = torch.ones(levels.numel(), dtype=torch.long, device=device)  # a root's component size
    first = torch.arange(levels.numel(), device=device) % plane  # a root's first pixel in raster order
    best_key = torch.full((batch,), -1, dtype=torch.long, device=device)
    best_box = torch.full((batch, 4), float("nan"), dtype=torch.float64, device=device)
    out = torch.empty(batch, steps, 4, dtype=torch.float64, device=device)
    for level, dead, into, roots, box in sweep(levels, steps, connectivity):
        count.index_add_(0, into, count.index_select(0, dead))
        first.scatter_reduce_(0, into, first.index_select(0, dead), reduce="amin")
        if len(roots):
            image = roots // plane
            key = count.index_select(0, roots) * (plane + 1) + (plane - 1 - first.index_select(0, roots))
            new_key = best_key.clone().scatter_reduce_(0, image, key, reduce="amax")
            won = (key == new_key.index_select(0, image)) & (key > best_key.index_select(0, image))
            best_box.index_copy_(0, image.masked_select(won), box.index_select(1, roots.masked_select(won)).T.double())
            best_key = new_key
        out[:, level - 1] = best_box
    return out
