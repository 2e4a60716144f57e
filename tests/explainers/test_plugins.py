"""A new CAM method in one file: file / module / entry-point specs reach the module, the CLI and the results."""
import importlib.metadata
import textwrap

import pytest
import torch

from benchmark.cli import main
from benchmark.explainers import create_explainer, list_explainers, plugins, resolve_explainer
from benchmark.explainers.registry import _REGISTRY

MY_CAM = textwrap.dedent('''
    """Mean-activation CAM: every channel weighted by its spatial mean (a user's one-file method)."""
    from benchmark.explainers import BaseExplainer


    class MyCAM(BaseExplainer):
        """Channels weighted by their mean activation."""

        uses_gradients = False

        def weights(self, inputs):
            return inputs.activations.mean(dim=(2, 3), keepdim=True)
''')


def test_a_file_spec_is_ranked_by_cam_bench_run(tmp_path, capsys, clean_registry):
    path = tmp_path / "my_cam.py"
    path.write_text(MY_CAM)
    out = tmp_path / "run"
    assert main(["run", "--data_args.size", "4", "--batch_size", "4", "--backbones", "[synthetic/res_cnn]",
                 "--explainers", f"[center, {path}:MyCAM]", "--bootstrap", "20", "--out", str(out),
                 "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]) == 0
    assert "| mycam |" in capsys.readouterr().out
    assert "synthetic,synthetic/res_cnn,mycam,pointing_game_accuracy," in (out / "results.csv").read_text()


def test_the_file_method_computes_its_closed_form(tmp_path, clean_registry):
    (tmp_path / "my_cam.py").write_text(MY_CAM)
    name = resolve_explainer(f"{tmp_path / 'my_cam.py'}:MyCAM")
    assert name == "mycam" and resolve_explainer(f"{tmp_path / 'my_cam.py'}:MyCAM") == "mycam"  # imported once
    # conv -> GAP -> linear: the map is relu(sum_k mean(A_k) A_k), upsampled and min-max normalised
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = torch.randn(2, 3, 8, 8)
    maps = create_explainer(name, model, target_layer="1")(x, torch.tensor([0, 1]))
    acts = model[1](model[0](x))
    cam = (acts.mean(dim=(2, 3), keepdim=True) * acts).sum(1).relu()
    cam = (cam - cam.amin(dim=(1, 2), keepdim=True)) / (cam.amax(dim=(1, 2), keepdim=True)
                                                        - cam.amin(dim=(1, 2), keepdim=True))
    torch.testing.assert_close(maps, cam, atol=1e-6, rtol=0)


def test_module_and_entry_point_specs(tmp_path, monkeypatch, clean_registry):
    package = tmp_path / "user_cams"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mean.py").write_text(MY_CAM.replace("class MyCAM", "class OtherCAM"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_explainer("user_cams.mean:OtherCAM") == "othercam"
    point = importlib.metadata.EntryPoint(name="published_cam", value="user_cams.mean:OtherCAM",
                                          group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [point] if group == plugins.ENTRY_POINT_GROUP else [])
    del _REGISTRY["othercam"]
    assert resolve_explainer("published_cam") == "published_cam" and "published_cam" in list_explainers()


def test_bad_specs_say_what_is_valid(tmp_path, clean_registry):
    with pytest.raises(FileNotFoundError, match="missing.py"):
        resolve_explainer(f"{tmp_path / 'missing.py'}:MyCAM")
    (tmp_path / "my_cam.py").write_text(MY_CAM)
    with pytest.raises(AttributeError, match=r"no class 'Nope'; its explainer classes: \['MyCAM'\]"):
        resolve_explainer(f"{tmp_path / 'my_cam.py'}:Nope")
    (tmp_path / "not_cam.py").write_text("class Plain:\n    pass\n")
    with pytest.raises(TypeError, match="subclass of BaseExplainer"):
        resolve_explainer(f"{tmp_path / 'not_cam.py'}:Plain")
    with pytest.raises(KeyError, match=r"Unknown explainer 'gradcamm'. Close matches: \['gradcam'"):
        resolve_explainer("gradcamm")
