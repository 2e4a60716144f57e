"""Figures of a run: saliency-map grids and mean insertion/deletion curves, as PNG files.

:func:`saliency_grid` reads the maps the run kept for its first ``figures`` images
(``<maps_dir>/images/<index>.npy``: uint8 ``(H, W, 3)`` image; ``<maps_dir>/<safe_name(method)>/<index>.npy``:
float16 ``(H, W)`` map in [0, 1]) and draws one row per image, one column per method; when the run kept the
image's sidecar (:mod:`benchmark.report.figure_labels`), every cell of the row shows the outline of the
explained class's evidence and the row is captioned with the sample id, target class and prediction.
:func:`mean_curves` draws, per metric, each method's mean perturbation curve from the per-sample rows
(:func:`benchmark.report.results.read_per_sample`), as computed by :func:`mean_curve_table`.

Figures are drawn with :class:`matplotlib.figure.Figure` on an Agg canvas (no pyplot, no backend
switch, nothing global touched) and saved without the ``Software`` PNG metadata, so the same inputs
give byte-identical files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnchoredOffsetbox, HPacker, TextArea

from benchmark.report.figure_labels import RowInfo, box_segments, caption_parts, outline_segments, read_sidecar
from benchmark.runner.folder import safe_name

__all__ = ["CELL_PIXELS", "DPI", "OUTLINE_COLOR", "WRONG_COLOR", "grid_size", "mean_curve_table", "mean_curves",
           "saliency_grid"]

#: Resolution of every figure (dots per inch).
DPI = 100
#: Side of one image cell of :func:`saliency_grid`, in pixels (1.6 inch at :data:`DPI`).
CELL_PIXELS = 160
#: Colour of the 1-pixel outline of the ground-truth evidence (masks, else boxes) drawn on every cell of a row.
OUTLINE_COLOR = "white"
#: Colour of the prediction in a row caption when it is wrong.
WRONG_COLOR = "#d62728"
# Grid margins in pixels: left (row labels), right, top (column titles), figure title, bottom, between cells,
# and the caption strip under each row (with sidecars; the rotated "#<index>" labels then leave the left margin).
_LEFT, _RIGHT, _TOP, _TITLE, _BOTTOM, _GAP, _CAPTION = 24, 8, 24, 28, 8, 8, 14
_CAPTION_PT = 8.0  # caption font size, shrunk to 6 pt for a long caption of a narrow grid
_TITLE_CHARS = 26  # column-title characters that fit a cell at 8 pt
# One curve subplot of mean_curves, in inches (width, height).
_CURVE_INCHES = (4.5, 3.5)
_PERTURBED = {"deletion": "deleted", "insertion": "inserted"}

PathLike = Union[str, os.PathLike]


def line_style(i: int) -> dict:
    """The ``i``-th method's line: one of the 10 default colours, then a new dash pattern every 10 methods.

    Examples:
        >>> line_style(12)
        {'color': 'C2', 'linestyle': '--'}
    """
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[i // 10 % 4]}


def _save(fig: Figure, path: PathLike) -> Path:
    """Save ``fig`` as a PNG without time- or version-dependent metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def grid_size(n_rows: int, n_cols: int, title: bool = False, captions: bool = False) -> Tuple[int, int]:
    """Pixel size ``(width, height)`` of a :func:`saliency_grid` PNG with ``n_cols`` columns (image + methods);
    ``captions``: a caption strip under each row instead of the rotated labels at the left.

    Examples:
        >>> grid_size(2, 4), grid_size(2, 4, title=True), grid_size(2, 4, captions=True)
        ((696, 360), (696, 388), (680, 388))
    """
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"Expected at least one row and one column, but got {n_rows} x {n_cols}.")
    left, caption = (_RIGHT, _CAPTION) if captions else (_LEFT, 0)
    width = left + n_cols * CELL_PIXELS + (n_cols - 1) * _GAP + _RIGHT
    height = (_TOP + (_TITLE if title else 0) + n_rows * (CELL_PIXELS + caption) + (n_rows - 1) * _GAP
              + _BOTTOM)
    return width, height


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"Expected {str(path)!r}, but it does not exist: the run keeps maps only for its "
                                "first `figures` images (and only for the methods it ran).")
    return np.load(path)


def _column_title(method: str) -> Tuple[str, float]:
    """A method name and font size that fit one grid cell: shrunk down to 6.5 pt, then cut at the start.

    Examples:
        >>> _column_title("gradcam"), _column_title("benchmark/explainers/custom_methods.py:MyFancyCAM")
        (('gradcam', 8.0), ('…rs/custom_methods.py:MyFancyCAM', 6.5))
    """
    fit = _TITLE_CHARS * 8 * 2 // 13  # characters that fit at 6.5 pt
    if len(method) > fit:
        method = "…" + method[-(fit - 1):]
    return method, max(6.5, min(8.0, 8.0 * _TITLE_CHARS / max(len(method), 1)))


def _image(maps_dir: Path, index: int) -> np.ndarray:
    """Kept image ``index`` as uint8 ``(H, W, 3)`` (a grey ``(H, W, 1)`` one repeated)."""
    image = _load(maps_dir / "images" / f"{index}.npy")
    if image.ndim == 3 and image.shape[2] == 1:  # grey (MNIST): shown as grey RGB
        image = np.repeat(image, 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected image {index} of shape (H, W, 3) or (H, W, 1), but got {image.shape}.")
    return image


def _evidence(info: Optional[RowInfo], shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """Outline segments of a row's evidence: the mask of the explained class when kept, else its boxes."""
    if info is None:
        return None
    if info.mask is not None:
        if info.mask.shape != tuple(shape):
            raise ValueError(f"Expected the evidence mask of image {info.index} of shape {tuple(shape)}, but got "
                             f"{info.mask.shape}.")
        segments = outline_segments(info.mask)
    else:
        segments = box_segments(info.boxes) if info.boxes is not None else np.zeros((0, 2, 2))
    return segments if len(segments) else None


def _caption(fig: Figure, ax, parts: Sequence[Tuple[str, bool]], width: int) -> None:
    """Write a row caption under ``ax`` (the row's first cell), left-aligned; ``wrong`` pieces in red and bold.

    The font is shrunk (down to 6 pt) so that the caption fits the grid's width.
    """
    chars = max(sum(len(text) for text, _ in parts), 1)
    fit = (width - 2 * _RIGHT) / (chars * 0.6 * DPI / 72)  # ~0.6 em per character
    size = max(6.0, min(_CAPTION_PT, fit))
    areas = [TextArea(text, textprops={"fontsize": size, "color": WRONG_COLOR if wrong else "black",
                                       "fontweight": "bold" if wrong else "normal"}) for text, wrong in parts]
    box = AnchoredOffsetbox("upper left", child=HPacker(children=areas, align="baseline", pad=0, sep=0), pad=0,
                            borderpad=0.15, frameon=False, bbox_to_anchor=(0.0, 0.0), bbox_transform=ax.transAxes)
    fig.add_artist(box)


def saliency_grid(maps_dir: PathLike, methods: Sequence[str], indices: Sequence[int], path: PathLike,
                  title: Optional[str] = None) -> Path:
    """A PNG grid of saliency maps: one row per dataset index, the image then one column per method.

    Each map is drawn over its image (colormap ``"jet"``, alpha 0.5, range [0, 1]); columns are titled
    with the method names (a long name is shrunk, then cut at its start). When the run kept the images'
    sidecars (:mod:`benchmark.report.figure_labels`), every cell of a row -- image and maps -- shows the
    1-pixel :data:`OUTLINE_COLOR` outline of the explained class's evidence (the outline of its instance
    masks, else its boxes; none for an unannotated sample), and a caption under the row gives the sample id,
    the explained class and the top-1 prediction (in :data:`WRONG_COLOR`, marked ✗, when wrong), by class
    name when the run knew them. Without any sidecar (a folder from before them) rows are labelled
    ``#<index>`` at the left, as they always were. The PNG is :func:`grid_size` pixels.

    Args:
        maps_dir: the maps folder of one backbone (``images/`` and one folder per method).
        methods: method names as in the run (their folders are ``safe_name(method)``).
        indices: dataset indices, one row each.
        path: the PNG written (parent folders created).
        title: optional figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: no method or no index; an image, map or evidence mask of the wrong shape; an unreadable
            sidecar.
        FileNotFoundError: an image or map is not on disk.

    Examples:
        >>> import tempfile
        >>> from benchmark.report.figure_labels import write_sidecar
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name, array in [("images", np.zeros((8, 8, 3), np.uint8)), ("gradcam", np.ones((8, 8), np.float16))]:
        ...     (folder / name).mkdir()
        ...     np.save(folder / name / "0.npy", array)
        >>> saliency_grid(folder, ["gradcam"], [0], folder / "grid.png").name
        'grid.png'
        >>> _ = write_sidecar(folder / "images", 0, sample_id="img_0", target=1, prediction=0, boxes=[[2, 2, 6, 6]])
        >>> saliency_grid(folder, ["gradcam"], [0], folder / "labelled.png").name
        'labelled.png'
    """
    methods, indices = list(methods), [int(i) for i in indices]
    if not methods or not indices:
        raise ValueError(f"Expected at least one method and one index, but got methods={methods}, "
                         f"indices={indices}.")
    maps_dir = Path(maps_dir)
    infos = [read_sidecar(maps_dir / "images", index) for index in indices]
    captions = any(info is not None for info in infos)
    caption = _CAPTION if captions else 0
    width, height = grid_size(len(indices), len(methods) + 1, title is not None, captions)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    axes = fig.subplots(len(indices), len(methods) + 1, squeeze=False)
    fig.subplots_adjust(left=(_RIGHT if captions else _LEFT) / width, right=1 - _RIGHT / width,
                        bottom=(_BOTTOM + caption) / height,
                        top=1 - (_TOP + (_TITLE if title is not None else 0)) / height,
                        wspace=_GAP / CELL_PIXELS, hspace=(_GAP + caption) / CELL_PIXELS)
    for row, (index, info) in enumerate(zip(indices, infos)):
        image = _image(maps_dir, index)
        evidence = _evidence(info, image.shape[:2])
        for col, ax in enumerate(axes[row]):
            ax.set_axis_off()
            ax.imshow(image)
            if col == 0 and not captions:
                ax.text(-0.04, 0.5, f"#{index}", transform=ax.transAxes, rotation=90, ha="right", va="center",
                        fontsize=9)
            if col > 0:
                method = methods[col - 1]
                saliency = _load(maps_dir / safe_name(method) / f"{index}.npy")
                if saliency.shape != image.shape[:2]:
                    raise ValueError(f"Expected the {method!r} map of image {index} of shape {image.shape[:2]}, "
                                     f"but got {saliency.shape}.")
                ax.imshow(saliency.astype(np.float32), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            if evidence is not None:  # 1 px, not antialiased: exactly on the pixel edges, over the map
                ax.add_collection(LineCollection(evidence, colors=OUTLINE_COLOR, linewidths=72 / DPI,
                                                 antialiaseds=False), autolim=False)
        if captions:
            _caption(fig, axes[row, 0], caption_parts(info) if info is not None else [(f"#{index}", False)], width)
    axes[0, 0].set_title("image", fontsize=8)
    for ax, method in zip(axes[0, 1:], methods):
        text, size = _column_title(method)
        ax.set_title(text, fontsize=size)
    if title is not None:
        fig.suptitle(title, y=1 - 4 / height, va="top", fontsize=10)
    return _save(fig, path)


def _curve(value) -> Optional[np.ndarray]:
    """A stored ``[auc, p_0, ..., p_n]`` row as float64, or None for a plain float (AUC only)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        row = np.asarray(value, dtype=np.float64)
        if row.ndim != 1 or row.size < 3:
            raise ValueError(f"Expected a curve row [auc, p_0, ..., p_n] with n >= 1, but got shape {row.shape}.")
        return row
    return None


def mean_curve_table(frame: pd.DataFrame, metric: str) -> Dict[str, np.ndarray]:
    """Per method, the mean of the stored ``[auc, p_0, ..., p_n]`` rows of ``metric`` whose values are all defined.

    Rows with a NaN anywhere (undefined sample) are left out; rows holding a plain float (AUC only, no
    curve) are ignored, and methods with no curve at all are absent. A method whose curves are all
    undefined gets a row of NaN. Methods come in order of first appearance.

    Raises:
        ValueError: ``frame`` lacks the ``method`` or ``metric`` column; a method's curves differ in length.

    Examples:
        >>> frame = pd.DataFrame({"method": ["a", "a", "a", "b"],
        ...                       "deletion": [[0.5, 1.0, 0.0], [0.3, 0.6, 0.0], [0.1, float("nan"), 0.0], 0.2]})
        >>> mean_curve_table(frame, "deletion")
        {'a': array([0.4, 0.8, 0. ])}
    """
    missing = [c for c in ("method", metric) if c not in frame.columns]
    if missing:
        raise ValueError(f"Expected columns 'method' and {metric!r} in the per-sample frame, but got "
                         f"{list(frame.columns)}.")
    rows: Dict[str, list] = {}
    for method, value in zip(frame["method"], frame[metric]):
        row = _curve(value)
        if row is None:
            continue
        same = rows.setdefault(str(method), [])
        if same and same[0].size != row.size:
            raise ValueError(f"Expected every {metric!r} curve of {method!r} to have {same[0].size - 1} points, "
                             f"but got {row.size - 1}.")
        same.append(row)
    table = {}
    for method, same in rows.items():
        stacked = np.stack(same)
        defined = stacked[~np.isnan(stacked).any(axis=1)]
        table[method] = defined.mean(axis=0) if len(defined) else np.full(stacked.shape[1], np.nan)
    return table


def mean_curves(frame: pd.DataFrame, path: PathLike, metrics: Sequence[str] = ("deletion", "insertion"),
                title: Optional[str] = None) -> Optional[Path]:
    """A PNG with one subplot per metric: each method's mean probability curve, as :func:`mean_curve_table`.

    The x axis is the fraction of pixels deleted (inserted), from 0 to 1; the y axis the mean probability
    of the target class, in [0, 1]. Legend labels give the method and its mean AUC over the same samples.
    Metrics whose column is absent or holds no curve (AUC only) are left out.

    Args:
        frame: per-sample rows (:func:`benchmark.report.results.read_per_sample`) of one dataset and backbone.
        path: the PNG written (parent folders created).
        metrics: metric columns to draw, in this order.
        title: optional figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`, or None (nothing written) when no metric has curves.

    Raises:
        ValueError: ``frame`` holds several datasets or backbones, or lacks the ``method`` column.

    Examples:
        >>> import tempfile
        >>> frame = pd.DataFrame({"method": ["gradcam"], "deletion": [0.25]})
        >>> mean_curves(frame, Path(tempfile.mkdtemp()) / "curves.png") is None
        True
    """
    if "method" not in frame.columns:
        raise ValueError(f"Expected a 'method' column in the per-sample frame, but got {list(frame.columns)}.")
    for column in ("dataset", "backbone"):
        if column in frame.columns and frame[column].nunique() > 1:
            raise ValueError(f"Expected the rows of one {column}, but got {sorted(map(str, frame[column].unique()))}.")
    tables = {m: mean_curve_table(frame, m) for m in metrics if m in frame.columns}
    tables = {m: table for m, table in tables.items() if table}
    if not tables:
        return None
    inches_w, inches_h = _CURVE_INCHES
    fig = Figure(figsize=(inches_w * len(tables), inches_h + (0.25 if title is not None else 0.0)), dpi=DPI)
    axes = fig.subplots(1, len(tables), squeeze=False)[0]
    for ax, (metric, table) in zip(axes, tables.items()):
        for i, (method, mean) in enumerate(table.items()):
            label = f"{method} (no defined curve)" if np.isnan(mean[0]) else f"{method} (AUC {mean[0]:.3f})"
            ax.plot(np.linspace(0.0, 1.0, mean.size - 1), mean[1:], label=label,
                    **line_style(i))
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_title(metric)
        ax.set_xlabel(f"fraction of pixels {_PERTURBED.get(metric, 'perturbed')}")
        ax.set_ylabel("mean probability of the target class")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
