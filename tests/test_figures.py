"""Tests of :mod:`benchmark.report.figures`: saliency grids and mean insertion/deletion curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.report.figures import CELL_PIXELS, DPI, grid_size, mean_curve_table, mean_curves, saliency_grid
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
