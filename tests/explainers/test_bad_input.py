"""Bad arguments raise a clear error that names the offending value.

Reference: the documented ``Raises`` of ``create_explainer``, ``resolve_target_layer`` and
``BaseExplainer.__call__`` (TypeError for wrong types, ValueError for wrong shapes / values,
KeyError for unknown names, with close matches or candidates listed).
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from benchmark.explainers import create_explainer, list_explainers

NUM_CLASSES = 10


def tiny_model() -> nn.Sequential:
    """``conv -> ReLU -> conv -> ReLU -> GAP -> linear`` with 10 classes, seeded, eval mode."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, NUM_CLASSES)).eval()


@pytest.fixture(scope="module")
def explainer():
    """Grad-CAM on :func:`tiny_model` at layer ``"3"``."""
    return create_explainer("gradcam", tiny_model(), target_layer="3", input_size=(3, 16, 16))


IMAGES = torch.zeros(2, 3, 16, 16)


# --------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("images, kind", [
    (IMAGES.numpy(), "ndarray"),
    (IMAGES.tolist(), "list"),
])
def test_images_not_a_tensor(explainer, images, kind):
    """Reference: BaseExplainer.__call__ (TypeError naming the type)."""
    with pytest.raises(TypeError, match=kind):
        explainer(images)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_images_not_floating_point(explainer, dtype):
    """Reference: BaseExplainer.__call__ (TypeError naming the dtype)."""
    with pytest.raises(TypeError, match=re.escape(str(dtype))):
        explainer(IMAGES.to(dtype))


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 1, 16, 16), (2, 4, 16, 16), (0, 3, 16, 16),
                                   (1, 2, 3, 16, 16)])
def test_images_bad_shape(explainer, shape):
    """Reference: BaseExplainer.__call__ (ValueError with the shape): 3-D, channels, empty batch."""
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        explainer(torch.zeros(shape))


# -------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize("targets", [torch.tensor([1]), torch.tensor([1, 2, 3]), torch.tensor([[1, 2]]),
                                     torch.tensor(1)])
def test_targets_wrong_length(explainer, targets):
    """Reference: BaseExplainer.__call__ (ValueError with the expected and the given shape)."""
    with pytest.raises(ValueError, match=re.escape(f"(2,), but got {tuple(targets.shape)}")):
        explainer(IMAGES, targets)


@pytest.mark.parametrize("targets", [torch.tensor([1.0, 2.0]), torch.tensor([True, False])])
def test_targets_not_integer(explainer, targets):
    """Reference: BaseExplainer.__call__ (TypeError naming the dtype)."""
    with pytest.raises(TypeError, match=re.escape(str(targets.dtype))):
        explainer(IMAGES, targets)


def test_targets_not_a_tensor(explainer):
    """Reference: BaseExplainer.__call__ (TypeError naming the type)."""
    with pytest.raises(TypeError, match="list"):
        explainer(IMAGES, [1, 2])


@pytest.mark.parametrize("targets, bad", [([1, NUM_CLASSES], [NUM_CLASSES]), ([-1, 3], [-1]),
                                          ([99, -5], [99, -5])])
def test_targets_out_of_range(explainer, targets, bad):
    """Reference: BaseExplainer.__call__ (ValueError naming the valid range and the bad values)."""
    with pytest.raises(ValueError, match=re.escape(f"[0, {NUM_CLASSES - 1}], but got {bad}")):
        explainer(IMAGES, torch.tensor(targets))


def test_indices_float(explainer):
    """Reference: BaseExplainer.__call__ (indices are checked like targets)."""
    with pytest.raises(TypeError, match="torch.float32"):
        explainer(IMAGES, None, torch.tensor([0.0, 1.0]))


# ---------------------------------------------------------------------------- names and layers
@pytest.mark.parametrize("name, close", [("gradcamm", "gradcam"), ("GradCAM", "gradcam"),
                                         ("scorcam", "scorecam"), ("layer_cam", "layercam")])
def test_unknown_explainer_lists_close_matches(name, close):
    """Reference: create_explainer (KeyError listing close matches and every valid name)."""
    with pytest.raises(KeyError) as info:
        create_explainer(name, tiny_model())
    message = str(info.value)
    assert repr(name) in message
    assert re.search(r"Close matches: \[[^\]]*'" + close + "'", message)
    assert all(repr(valid) in message for valid in list_explainers())


def test_explainer_name_not_a_string():
    """Reference: registry lookup (TypeError naming the type)."""
    with pytest.raises(TypeError, match="int"):
        create_explainer(3, tiny_model())


def test_unknown_layer_lists_candidates():
    """Reference: resolve_target_layer (KeyError with close matches and candidate layers)."""
    with pytest.raises(KeyError) as info:
        create_explainer("gradcam", tiny_model(), target_layer="33", input_size=(3, 16, 16))
    message = str(info.value)
    assert "'33'" in message
    close, candidates = message.split("Close matches:")[1].split("Last candidate feature-map layers:")
    assert "'3'" in close
    assert all(f"'{name}'" in candidates for name in ("0", "1", "2", "3"))


def test_unknown_layer_torchvision_resnet():
    """Reference: resolve_target_layer on a real backbone ('layer5' -> close match 'layer4')."""
    from torchvision.models import resnet18

    with pytest.raises(KeyError, match="layer4"):
        create_explainer("gradcam", resnet18(num_classes=NUM_CLASSES), target_layer="layer5",
                         input_size=(3, 64, 64))


def test_layer_module_not_in_model():
    """Reference: resolve_target_layer (ValueError naming the module type and the model)."""
    with pytest.raises(ValueError, match="Conv2d.*not part of Sequential"):
        create_explainer("gradcam", tiny_model(), target_layer=nn.Conv2d(3, 8, 3))


def test_layer_module_of_the_model_resolves_to_its_name():
    """Reference: resolve_target_layer (a module of the model is accepted, stored by name)."""
    model = tiny_model()
    assert create_explainer("gradcam", model, target_layer=model[2]).target_layer == "2"


def test_layer_of_wrong_type():
    """Reference: resolve_target_layer (TypeError naming the type)."""
    with pytest.raises(TypeError, match="int"):
        create_explainer("gradcam", tiny_model(), target_layer=3)


def test_model_without_spatial_layer():
    """Reference: resolve_target_layer auto-detection (ValueError with the input size)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))
    with pytest.raises(ValueError, match=re.escape("(3, 8, 8)")):
        create_explainer("gradcam", model, input_size=(3, 8, 8))


def test_layer_without_4d_output():
    """Reference: detect_layout at construction (ValueError naming the layer, its output shape and `layout=`)."""
    model = tiny_model()
    with pytest.raises(ValueError, match=re.escape("'6'") + ".*" + re.escape(f"(1, {NUM_CLASSES})") + ".*layout="):
        create_explainer("gradcam", model, target_layer="6", input_size=(3, 16, 16))


def test_model_not_a_module():
    """Reference: BaseExplainer.__init__ (TypeError naming the type)."""
    with pytest.raises(TypeError, match="function"):
        create_explainer("gradcam", lambda x: x)


# ------------------------------------------------------------------------------- method options
@pytest.mark.parametrize("name, options, shown", [
    ("scorecam", {"chunk_size": 0}, "0"),
    ("scorecam", {"chunk_size": -3}, "-3"),
    ("scorecam", {"chunk_size": 1.5}, "1.5"),
    ("ablationcam", {"chunk_size": 0}, "0"),
    ("ablationcam", {"chunk_size": "8"}, "'8'"),
    ("smoothgradcampp", {"n_samples": 0}, "0"),
    ("smoothgradcampp", {"n_samples": 2.0}, "2.0"),
    ("smoothgradcampp", {"sigma": -0.1}, "-0.1"),
    ("smoothgradcampp", {"sigma": float("nan")}, "nan"),
    ("center", {"sigma": 0.0}, "0.0"),
    ("center", {"sigma": -1.0}, "-1.0"),
])
def test_bad_method_options(name, options, shown):
    """Reference: the explainers' ``__init__`` checks (ValueError showing the value)."""
    (key, _), = options.items()
    with pytest.raises(ValueError, match=f"`{key}`.*{re.escape(shown)}"):
        create_explainer(name, tiny_model(), target_layer="3", input_size=(3, 16, 16), **options)


def test_bad_input_size():
    """Reference: BaseExplainer.__init__ (ValueError with the given input_size)."""
    with pytest.raises(ValueError, match=re.escape("(16, 16)")):
        create_explainer("gradcam", tiny_model(), target_layer="3", input_size=(16, 16))
