"""Tests of :mod:`benchmark.report.figures`: saliency grids and mean insertion/deletion curves, and of
:mod:`benchmark.report.figure_labels`: the sidecars that outline a row's evidence and caption it (the writer's side:
tests/test_sidecar_writer.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from benchmark.report.figure_labels import (
    RowInfo,
    box_segments,
    caption_text,
    outline_segments,
    write_class_names,
    write_sidecar,
)
from benchmark.report.figures import (
    CELL_PIXELS,
    DPI,
    OUTLINE_COLOR,
    WRONG_COLOR,
    grid_size,
    mean_curve_table,
    mean_curves,
    saliency_grid,
)
from benchmark.runner.folder import safe_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = ["gradcam", "pkg/module:LayerCAM", "my_cam.py:MyCAM"]
INDICES = [3, 7]
NAN = float("nan")


@pytest.fixture
def maps_dir(tmp_path: Path) -> Path:
    """A maps folder of one backbone: 2 images of 16x16 and one map per (method, image)."""
    folder = tmp_path / "maps" / "synthetic--res_cnn"
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    for index in INDICES:
        np.save(folder / "images" / f"{index}.npy", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        for method in METHODS:
            (folder / safe_name(method)).mkdir(exist_ok=True)
            np.save(folder / safe_name(method) / f"{index}.npy", rng.random((16, 16)).astype(np.float16))
    return folder


def _frame() -> pd.DataFrame:
    """Per-sample rows of one dataset and backbone: curves of 4 points (3 steps), one undefined row."""
    rows = [
        ("gradcam", 0, [0.50, 1.0, 0.6, 0.2, 0.0], [0.40, 0.1, 0.3, 0.5, 0.9]),
        ("gradcam", 1, [0.30, 0.8, 0.4, 0.1, 0.0], [0.60, 0.2, 0.5, 0.8, 1.0]),
        ("gradcam", 2, [NAN, NAN, NAN, NAN, NAN], [NAN, 0.3, NAN, 0.1, 0.2]),
        ("pkg/module:LayerCAM", 0, [0.20, 0.9, 0.1, 0.0, 0.0], [0.70, 0.4, 0.6, 0.9, 1.0]),
        ("pkg/module:LayerCAM", 1, [0.40, 0.7, 0.5, 0.3, 0.1], [0.50, 0.0, 0.4, 0.7, 0.8]),
    ]
    return pd.DataFrame({"dataset": "synthetic", "backbone": "synthetic/res_cnn",
                         "method": [r[0] for r in rows], "index": [r[1] for r in rows],
                         "deletion": [np.array(r[2]) for r in rows], "insertion": [list(r[3]) for r in rows],
                         "complexity": [0.5] * len(rows)})


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_grid_size_adds_one_cell_per_column_and_row():
    width, height = grid_size(2, 4)
    assert grid_size(2, 5)[0] - width == grid_size(3, 4)[1] - height > CELL_PIXELS
    assert grid_size(2, 4, title=True)[0] == width and grid_size(2, 4, title=True)[1] > height
    with pytest.raises(ValueError, match="at least one row and one column"):
        grid_size(0, 4)


@pytest.mark.parametrize("title", [None, "synthetic/res_cnn"])
def test_saliency_grid_writes_a_png_of_the_grid_size(maps_dir, tmp_path, title):
    path = saliency_grid(maps_dir, METHODS, INDICES, tmp_path / "out" / "grid.png", title=title)
    assert path == tmp_path / "out" / "grid.png" and _is_png(path)
    with Image.open(path) as image:
        size = image.size
    expected = grid_size(len(INDICES), len(METHODS) + 1, title is not None)
    assert size == expected
    # one cell per column and row, at DPI: 1.6 inch cells
    assert CELL_PIXELS == round(1.6 * DPI) and size[0] > (len(METHODS) + 1) * CELL_PIXELS


def test_saliency_grid_is_byte_identical_when_rendered_again(maps_dir, tmp_path):
    first = saliency_grid(maps_dir, METHODS, INDICES, tmp_path / "a.png", title="run")
    mean_curves(_frame(), tmp_path / "between.png")  # other figures in between change nothing
    second = saliency_grid(maps_dir, METHODS, INDICES, tmp_path / "b.png", title="run")
    assert first.read_bytes() == second.read_bytes()


def test_saliency_grid_depends_on_the_maps(maps_dir, tmp_path):
    first = saliency_grid(maps_dir, METHODS[:1], INDICES, tmp_path / "a.png")
    np.save(maps_dir / "gradcam" / "3.npy", np.zeros((16, 16), np.float16))
    second = saliency_grid(maps_dir, METHODS[:1], INDICES, tmp_path / "b.png")
    assert first.read_bytes() != second.read_bytes()


def test_saliency_grid_names_the_missing_map(maps_dir, tmp_path):
    missing = maps_dir / safe_name("my_cam.py:MyCAM") / "7.npy"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="first `figures` images") as info:
        saliency_grid(maps_dir, METHODS, INDICES, tmp_path / "grid.png")
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"images.+9\.npy"):
        saliency_grid(maps_dir, METHODS, [9], tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def test_saliency_grid_refuses_bad_inputs(maps_dir, tmp_path):
    with pytest.raises(ValueError, match="at least one method and one index"):
        saliency_grid(maps_dir, [], INDICES, tmp_path / "grid.png")
    with pytest.raises(ValueError, match="at least one method and one index"):
        saliency_grid(maps_dir, METHODS, [], tmp_path / "grid.png")
    np.save(maps_dir / "gradcam" / "3.npy", np.zeros((8, 8), np.float16))
    with pytest.raises(ValueError, match=r"Expected the 'gradcam' map of image 3 of shape \(16, 16\)"):
        saliency_grid(maps_dir, METHODS, INDICES, tmp_path / "grid.png")
    np.save(maps_dir / "images" / "3.npy", np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"Expected image 3 of shape \(H, W, 3\)"):
        saliency_grid(maps_dir, METHODS, INDICES, tmp_path / "grid.png")


def test_mean_curve_table_equals_the_hand_computed_mean_without_undefined_rows():
    table = mean_curve_table(_frame(), "deletion")
    assert list(table) == ["gradcam", "pkg/module:LayerCAM"]
    np.testing.assert_allclose(table["gradcam"], [0.40, 0.9, 0.5, 0.15, 0.0])
    np.testing.assert_allclose(table["pkg/module:LayerCAM"], [0.30, 0.8, 0.3, 0.15, 0.05])
    # a row with a single NaN point is undefined too
    np.testing.assert_allclose(mean_curve_table(_frame(), "insertion")["gradcam"], [0.50, 0.15, 0.4, 0.65, 0.95])


def test_mean_curve_table_edge_cases():
    frame = pd.DataFrame({"method": ["a", "b", "c"], "deletion": [[NAN, NAN, NAN], 0.3, [0.5, 1.0, 0.0]]})
    table = mean_curve_table(frame, "deletion")
    assert list(table) == ["a", "c"] and np.isnan(table["a"]).all() and table["a"].shape == (3,)
    with pytest.raises(ValueError, match="have 2 points, but got 3"):
        mean_curve_table(pd.DataFrame({"method": ["a", "a"], "deletion": [[0.5, 1, 0], [0.5, 1, 0.5, 0]]}),
                         "deletion")
    with pytest.raises(ValueError, match=r"n >= 1, but got shape \(2,\)"):
        mean_curve_table(pd.DataFrame({"method": ["a"], "deletion": [[0.5, 1.0]]}), "deletion")
    with pytest.raises(ValueError, match="Expected columns 'method' and 'insertion'"):
        mean_curve_table(frame, "insertion")


def test_mean_curves_writes_a_deterministic_png(tmp_path):
    frame = _frame()
    first = mean_curves(frame, tmp_path / "out" / "curves.png", title="synthetic / res_cnn")
    assert first == tmp_path / "out" / "curves.png" and _is_png(first)
    with Image.open(first) as image:
        two_panels = image.size
    second = mean_curves(frame, tmp_path / "again.png", title="synthetic / res_cnn")
    assert first.read_bytes() == second.read_bytes()
    one = mean_curves(frame, tmp_path / "one.png", metrics=("insertion", "complexity", "absent"))
    with Image.open(one) as image:
        assert image.size[0] * 2 == two_panels[0]


def test_mean_curves_plots_the_table(tmp_path, monkeypatch):
    import matplotlib.axes

    plotted = []
    original = matplotlib.axes.Axes.plot

    def spy(self, x, y, **kwargs):
        plotted.append((kwargs["label"], np.asarray(x), np.asarray(y)))
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    mean_curves(_frame(), tmp_path / "curves.png", metrics=("deletion",))
    assert [p[0] for p in plotted] == ["gradcam (AUC 0.400)", "pkg/module:LayerCAM (AUC 0.300)"]
    np.testing.assert_allclose(plotted[0][1], [0.0, 1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(plotted[0][2], [0.9, 0.5, 0.15, 0.0])
    np.testing.assert_allclose(plotted[1][2], [0.8, 0.3, 0.15, 0.05])


def test_mean_curves_without_curves_writes_nothing(tmp_path):
    frame = _frame().assign(deletion=0.4)
    assert mean_curves(frame, tmp_path / "curves.png", metrics=("deletion", "absent")) is None
    assert mean_curves(frame.iloc[:0], tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()


def test_mean_curves_refuses_several_backbones(tmp_path):
    frame = pd.concat([_frame(), _frame().assign(backbone="other")], ignore_index=True)
    with pytest.raises(ValueError, match="Expected the rows of one backbone"):
        mean_curves(frame, tmp_path / "curves.png")
    with pytest.raises(ValueError, match="Expected a 'method' column"):
        mean_curves(_frame().drop(columns="method"), tmp_path / "curves.png")


# ---- evidence outlines and row captions (sidecars) ----

GREY = 60  # the hand images are one flat grey: every outline pixel is exactly OUTLINE_COLOR
SIDE = 16  # hand images are 16 x 16: one image pixel is 10 x 10 PNG pixels
BOX = [4.0, 4.0, 12.0, 10.0]  # xyxy pixel edges
L_MASK = np.zeros((SIDE, SIDE), bool)
L_MASK[3:9, 5:11] = True
L_MASK[9:13, 7:9] = True


def _rgb(color) -> np.ndarray:
    return np.round(np.array(to_rgb(color)) * 255).astype(int)


@pytest.fixture
def hand_dir(tmp_path: Path) -> Path:
    """One flat grey 16x16 image (index 5) and one all-zero map, without a sidecar yet."""
    folder = tmp_path / "maps"
    (folder / "images").mkdir(parents=True)
    (folder / "gradcam").mkdir()
    np.save(folder / "images" / "5.npy", np.full((SIDE, SIDE, 3), GREY, np.uint8))
    np.save(folder / "gradcam" / "5.npy", np.zeros((SIDE, SIDE), np.float16))
    return folder


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _cells(png: np.ndarray):
    """``(top, left)`` of the image cell and of the map cell of a one-row, one-method grid."""
    grey = (png == GREY).all(-1)
    rows, cols = np.flatnonzero(grey.sum(1) > CELL_PIXELS // 2), np.flatnonzero(grey.sum(0) > CELL_PIXELS // 2)
    top, left = rows.min(), cols.min()  # (text antialiasing may hit the grey value too, but not on half a line)
    assert rows.max() - top + 1 == cols.max() - left + 1 == CELL_PIXELS  # the grey image fills its cell
    row = png[top + CELL_PIXELS // 2]
    background = (row == 255).all(-1)
    start = left + CELL_PIXELS + int(np.argmax(~background[left + CELL_PIXELS:]))  # first pixel of the map cell
    return (top, left), (top, start)


def _expected(segments: np.ndarray) -> set:
    """PNG pixels (row, col) of a cell covered by 1-px lines along ``segments`` (imshow data coordinates)."""
    scale = CELL_PIXELS // SIDE
    pixels = set()
    for (x0, y0), (x1, y1) in (np.asarray(segments) + 0.5) * scale:
        if y0 == y1:
            pixels |= {(int(y0), x) for x in range(int(min(x0, x1)), int(max(x0, x1)) + 1)}
        else:
            pixels |= {(y, int(x0)) for y in range(int(min(y0, y1)), int(max(y0, y1)) + 1)}
    return pixels


def _outline(png: np.ndarray, top: int, left: int) -> set:
    cell = png[top:top + CELL_PIXELS, left:left + CELL_PIXELS]
    return set(zip(*(a.tolist() for a in np.nonzero((cell == _rgb(OUTLINE_COLOR)).all(-1)))))


def test_box_outline_lies_exactly_on_the_box_edge_in_every_cell(hand_dir, tmp_path):
    write_sidecar(hand_dir / "images", 5, sample_id="img_00012", target=0, prediction=1, probability=0.87, label=0,
                  boxes=[BOX])
    png = _pixels(saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "grid.png"))
    expected = _expected(box_segments(np.array([BOX])))
    scale = CELL_PIXELS // SIDE
    x1, y1, x2, y2 = (int(v * scale) for v in BOX)
    assert {(y1, x1), (y2, x2), (y1 + 20, x1), (y1 + 20, x2), (y1, x1 + 30), (y2, x1 + 30)} <= expected
    for top, left in _cells(png):
        outline = _outline(png, top, left)
        assert outline == expected  # on the border, nowhere inside or outside the box
        inside = png[top + y1 + 1:top + y2, left + x1 + 1:left + x2]
        assert not (inside == _rgb(OUTLINE_COLOR)).all(-1).any()


def test_mask_outline_follows_the_mask_pixel_edges(hand_dir, tmp_path):
    write_sidecar(hand_dir / "images", 5, sample_id="val_00000005", target=1, prediction=1, label=1,
                  boxes=[[5, 3, 11, 13]], mask=L_MASK)
    png = _pixels(saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "grid.png"))
    expected = _expected(outline_segments(L_MASK))
    assert expected != _expected(box_segments(np.array([[5, 3, 11, 13]])))  # the mask wins over its box
    for top, left in _cells(png):
        assert _outline(png, top, left) == expected
    # spot-check under the bar (rows 3-8, columns 5-10): its lower edge, but not where the stem (columns 7-8) hangs
    assert (90, 55) in expected and (90, 80) not in expected and (95, 70) in expected and (95, 90) in expected


def test_outline_segments_of_a_hand_mask():
    segments = outline_segments(L_MASK)
    horizontal = segments[segments[:, 0, 1] == segments[:, 1, 1]]
    assert len(segments) == 8 and len(horizontal) == 4  # an L-shaped octagon
    assert [[4.5, 2.5], [10.5, 2.5]] in segments.tolist()  # the top edge, 6 pixels wide
    assert len(outline_segments(np.zeros((4, 4), bool))) == 0


def test_no_outline_without_annotation_or_evidence(hand_dir, tmp_path):
    write_sidecar(hand_dir / "images", 5, sample_id="a", target=0, prediction=0)  # unannotated
    png = _pixels(saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "a.png"))
    assert all(not _outline(png, *cell) for cell in _cells(png))
    write_sidecar(hand_dir / "images", 5, sample_id="a", target=0, prediction=0, boxes=np.zeros((0, 4)),
                  mask=np.zeros((SIDE, SIDE), bool))  # annotated, but no evidence of the explained class
    png = _pixels(saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "b.png"))
    assert all(not _outline(png, *cell) for cell in _cells(png))


def test_row_caption_names_the_id_target_and_prediction():
    names = ("circle", "square")
    wrong = RowInfo(12, "img_00012", target=0, prediction=1, probability=0.87, label=0, class_names=names)
    text = caption_text(wrong)
    assert text.startswith("img_00012 · target: circle · pred: square") and "✗" in text and wrong.wrong
    right = RowInfo(12, "img_00012", target=0, prediction=0, label=0, class_names=names)
    assert caption_text(right) == "img_00012 · target: circle · pred: circle" and not right.wrong
    assert caption_text(RowInfo(3, "x", target=1, prediction=0)) == "x · target: 1 · pred: 0 ✗"  # no names
    long = caption_text(RowInfo(3, "train/n01440764/n01440764_10026.JPEG", target=0, prediction=0,
                                class_names=("tench, Tinca tinca",)))
    assert long == "…64/n01440764_10026.JPEG · target: tench · pred: tench"  # the id cut at its start


def test_caption_is_drawn_and_a_wrong_prediction_is_red(hand_dir, tmp_path):
    write_class_names(hand_dir / "images", ["circle", "square"])
    red = _rgb(WRONG_COLOR)
    write_sidecar(hand_dir / "images", 5, sample_id="img_00012", target=0, prediction=1, label=0, boxes=[BOX])
    wrong = _pixels(saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "wrong.png"))
    write_sidecar(hand_dir / "images", 5, sample_id="img_00012", target=0, prediction=0, label=0, boxes=[BOX])
    right = _pixels(saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "right.png"))
    (top, _), _ = _cells(wrong)
    below = slice(top + CELL_PIXELS, None)
    assert (wrong[below] == red).all(-1).sum() > 20 and not (right[below] == red).all(-1).any()
    assert (right[below] < 100).all(-1).sum() > 50  # black caption text under the row
    assert wrong.shape[:2][::-1] == grid_size(1, 2, captions=True)


def test_folders_without_sidecars_render_as_before(maps_dir, hand_dir, tmp_path):
    path = saliency_grid(maps_dir, METHODS, INDICES, tmp_path / "old.png", title="run")
    with Image.open(path) as image:
        assert image.size == grid_size(len(INDICES), len(METHODS) + 1, title=True, captions=False)
    png = _pixels(saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "hand.png"))
    assert all(not _outline(png, *cell) for cell in _cells(png))
    # a sidecar for one row only: every row gets a caption strip, the others say "#<index>"
    write_sidecar(maps_dir / "images", 7, sample_id="val_7", target=0, prediction=0, boxes=[[2, 2, 6, 6]])
    path = saliency_grid(maps_dir, METHODS, INDICES, tmp_path / "mixed.png")
    with Image.open(path) as image:
        assert image.size == grid_size(len(INDICES), len(METHODS) + 1, captions=True)


def test_labelled_grid_is_byte_identical_when_rendered_again(hand_dir, tmp_path):
    write_class_names(hand_dir / "images", ["circle", "square"])
    write_sidecar(hand_dir / "images", 5, sample_id="img_00012", target=0, prediction=1, probability=0.5, label=0,
                  boxes=[BOX], mask=L_MASK)
    first = saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "a.png", title="run")
    mean_curves(_frame(), tmp_path / "between.png")
    second = saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "b.png", title="run")
    assert first.read_bytes() == second.read_bytes()


def test_unreadable_sidecar_or_wrong_mask_is_named(hand_dir, tmp_path):
    write_sidecar(hand_dir / "images", 5, sample_id="a", target=0, prediction=0, mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match=r"evidence mask of image 5 of shape \(16, 16\)"):
        saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "grid.png")
    (hand_dir / "images" / "5.json").write_text("{not json")
    with pytest.raises(ValueError, match="5.json"):
        saliency_grid(hand_dir, ["gradcam"], [5], tmp_path / "grid.png")
