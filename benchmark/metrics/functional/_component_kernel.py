"""The compiled threshold sweep behind MaxBoxAcc V1 and V2 (numba; imported on first use, so that starting the
command line does not load numba).

One pass over the pixels of each image in decreasing order of their level (a counting sort): a pixel joins a
union-find forest (union by size, path halving) with the neighbours already in it, so after level ``L`` the trees
are the connected components of ``levels > L - 1``. Each root carries its component's size, first pixel in raster
order and xyxy box. The first call compiles (a few seconds; ``cache=True`` keeps the machine code next to this file,
or in numba's user cache when that is read-only).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["sweep"]


@njit(cache=True, nogil=True, inline="always")
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True, nogil=True, inline="always")
def _link(parent, count, first, box, emitted, deaths, n_dead, level, image, rp, q):
    """Joins the tree of pixel ``q`` to root ``rp``; returns the root of both and the number of deaths recorded
    (a root merged away is recorded when it was reported before)."""
    rq = _find(parent, q)
    if rp == rq:
        return rp, n_dead
    if count[rp] < count[rq]:
        rp, rq = rq, rp
    parent[rq] = rp
    count[rp] += count[rq]
    first[rp] = min(first[rp], first[rq])
    box[rp, 0] = min(box[rp, 0], box[rq, 0])
    box[rp, 1] = min(box[rp, 1], box[rq, 1])
    box[rp, 2] = max(box[rp, 2], box[rq, 2])
    box[rp, 3] = max(box[rp, 3], box[rq, 3])
    if emitted[rq]:
        deaths[n_dead, 0], deaths[n_dead, 1], deaths[n_dead, 2] = level, image, rq
        n_dead += 1
    return rp, n_dead


@njit(cache=True, nogil=True)
def _order(lv, steps, order):
    """Fills ``order`` with the pixel indices by decreasing level (raster order within a level); returns where
    each level starts in it."""
    counts = np.zeros(steps + 2, np.int64)
    for i in range(lv.size):
        counts[lv[i]] += 1
    start = np.zeros(steps + 2, np.int64)
    for level in range(steps - 1, -1, -1):
        start[level] = start[level + 1] + counts[level + 1]
    fill = start.copy()
    for i in range(lv.size):
        order[fill[lv[i]]] = i
        fill[lv[i]] += 1
    return start


@njit(cache=True, nogil=True)
def sweep(levels, steps, eight):
    """Components of ``levels > k`` for every ``k < steps`` of ``(B, H, W)`` int64 ``levels`` in ``[0, steps]``.

    Returns ``(largest, events, deaths)``:

    * ``largest``: ``(B, steps, 4)`` float64 box of the largest component at each threshold (NaN when there is
      none; equal sizes go to the component whose first pixel comes first in raster order);
    * ``events``: ``(E, 7)`` int64 rows ``[level, image, root, x1, y1, x2, y2]``, one for each component that is
      new or has grown at ``level`` (a root in its image's plane), in the order of the sweep;
    * ``deaths``: ``(K, 3)`` int64 rows ``[level, image, root]``: a reported root merged into another at ``level``.
    """
    batch, height, width = levels.shape
    plane = height * width
    parent = np.empty(plane, np.int64)
    count = np.empty(plane, np.int64)
    first = np.empty(plane, np.int64)
    box = np.empty((plane, 4), np.int64)
    emitted = np.zeros(plane, np.bool_)
    seen = np.full(plane, -1, np.int64)
    order = np.empty(plane, np.int64)
    touched = np.empty(plane, np.int64)
    largest = np.full((batch, steps, 4), np.nan)
    events = np.empty((batch * plane, 7), np.int64)
    deaths = np.empty((batch * plane, 3), np.int64)
    n_events = n_dead = 0
    for image in range(batch):
        lv = levels[image].reshape(-1)
        start = _order(lv, steps, order)
        best, best_key = -1, -1
        for level in range(steps, 0, -1):
            n = 0
            for j in range(start[level], start[level - 1]):
                p = order[j]
                y, x = p // width, p % width
                parent[p], count[p], first[p], emitted[p] = p, 1, p, False
                box[p, 0], box[p, 1], box[p, 2], box[p, 3] = x, y, x + 1, y + 1
                r = p
                # neighbours before p in raster order are in the forest at level >= L, those after at > L
                for dy, dx in ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, 1), (1, 0), (1, -1), (1, 1)):
                    if not eight and dy != 0 and dx != 0:
                        continue
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < height and 0 <= xx < width:
                        q = yy * width + xx
                        if lv[q] > level or (lv[q] == level and q < p):
                            r, n_dead = _link(parent, count, first, box, emitted, deaths, n_dead, level, image, r, q)
                touched[n] = r
                n += 1
            for j in range(n):
                r = _find(parent, touched[j])
                if seen[r] == image * (steps + 1) + level:
                    continue
                seen[r] = image * (steps + 1) + level
                emitted[r] = True
                events[n_events, 0], events[n_events, 1], events[n_events, 2] = level, image, r
                events[n_events, 3:] = box[r]
                n_events += 1
                key = count[r] * (plane + 1) + (plane - 1 - first[r])
                if key > best_key:
                    best, best_key = r, key
            if best >= 0:
                best = _find(parent, best)
                largest[image, level - 1] = box[best]
    return largest, events[:n_events], deaths[:n_dead]
