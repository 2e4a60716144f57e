"""Explainers on hand-built models where the papers' definitions have a closed form.

References: CAM (Zhou et al., CVPR 2016) for Grad-CAM on a conv -> GAP -> linear network;
Ablation-CAM Eq. 3 (Ramaswamy & others, WACV 2020) for the same network; Grad-CAM++ for Smooth
Grad-CAM++ when gradients do not depend on the input (or sigma = 0); Eigen-CAM on a rank-1
activation; Fake-CAM (Poppi et al. 2021); the centre Gaussian; NOTES.md section 4 for
``normalize_maps``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from benchmark.explainers import create_explainer, normalize_maps

SIZE = 64
TARGETS = torch.tensor([2, 4])


def reference_postprocess(raw: torch.Tensor, size=(SIZE, SIZE)) -> torch.Tensor:
    """ReLU, bilinear upsampling (``align_corners=False``) and per-image min-max, in float64.

    Args:
        raw: ``(B, h, w)`` raw maps.
        size: output ``(H, W)``.

    Returns:
        ``(B, H, W)`` float64 maps; a constant map becomes zeros.
    """
    up = F.interpolate(raw.double().relu()[:, None], size=size, mode="bilinear",
                       align_corners=False)[:, 0]
    flat = up.flatten(1)
    low, high = flat.min(dim=1).values[:, None], flat.max(dim=1).values[:, None]
    return torch.where(high > low, (flat - low) / (high - low), torch.zeros_like(flat)).view_as(up)


def assert_close_maps(ours: torch.Tensor, ref: torch.Tensor, atol: float = 1e-5) -> None:
    """Max-abs comparison of two map batches, plus a guard against all-zero comparisons.

    Args:
        ours: our ``(B, H, W)`` maps.
        ref: reference maps, same shape.
        atol: tolerance on the max abs difference.
    """
    assert ours.shape == ref.shape
    assert (ours.double() - ref.double()).abs().max().item() <= atol
    assert ours.flatten(1).amax(dim=1).max().item() == 1.0


def gap_linear_model(seed: int = 0) -> nn.Sequential:
    """``conv -> ReLU -> global average pooling -> linear``; target layer ``"1"`` (the ReLU).

    Args:
        seed: init seed.

    Returns:
        The model in eval mode.
    """
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5)).eval()


@pytest.fixture(scope="module")
def images():
    """Two seeded 64x64 inputs."""
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def gap_linear_parts(model: nn.Sequential, images: torch.Tensor):
    """Activations ``A`` of the ReLU and the linear head's weights/bias, in float64.

    Args:
        model: from :func:`gap_linear_model`.
        images: inputs.

    Returns:
        ``(A (B, C, h, w), W (K, C), b (K,))``.
    """
    with torch.no_grad():
        acts = model[1](model[0](images)).double()
    return acts, model[4].weight.detach().double(), model[4].bias.detach().double()


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcam_on_gap_linear_equals_cam(images, seed):
    """Reference: CAM (Zhou et al. 2016), ``sum_k w_ck A_k`` with the linear layer's weights."""
    model = gap_linear_model(seed)
    acts, weight, _ = gap_linear_parts(model, images)
    cam = torch.einsum("bc,bchw->bhw", weight[TARGETS], acts)
    ours = create_explainer("gradcam", model, target_layer="1")(images, TARGETS)
    assert_close_maps(ours, reference_postprocess(cam))


@pytest.mark.parametrize("seed", [0, 1])
def test_ablationcam_on_gap_linear_closed_form(images, seed):
    """Reference: Ablation-CAM Eq. 3 in closed form, ``w_k = w_ck mean(A_k) / y_c``.

    Zeroing channel k lowers ``y_c = sum_k w_ck mean(A_k) + b_c`` by exactly ``w_ck mean(A_k)``.
    """
    model = gap_linear_model(seed)
    acts, weight, bias = gap_linear_parts(model, images)
    contributions = weight[TARGETS] * acts.mean(dim=(2, 3))  # (B, C)
    y = contributions.sum(dim=1) + bias[TARGETS]
    cam = torch.einsum("bc,bchw->bhw", contributions / y[:, None], acts)
    ours = create_explainer("ablationcam", model, target_layer="1", chunk_size=5)(images, TARGETS)
    assert_close_maps(ours, reference_postprocess(cam))


@pytest.mark.parametrize("sigma", [0.0, 0.5, 3.0])
def test_smoothgradcampp_on_gap_linear_equals_gradcampp(images, sigma):
    """Reference: Grad-CAM++ itself; on a GAP-linear head dS/dA = w_c / hw whatever the input."""
    model = gap_linear_model()
    ref = create_explainer("gradcampp", model, target_layer="1")(images, TARGETS)
    ours = create_explainer("smoothgradcampp", model, target_layer="1", sigma=sigma,
                            n_samples=3)(images, TARGETS)
    assert_close_maps(ours, ref)


def test_gradcampp_on_gap_linear_closed_form(images):
    """Reference: Grad-CAM++ Eq. 19 with constant g = w_c / hw: alpha = 1 / (2 + g sum A)."""
    model = gap_linear_model()
    acts, weight, _ = gap_linear_parts(model, images)
    g = weight[TARGETS][:, :, None, None] / acts[0, 0].numel()  # (B, C, 1, 1)
    alpha = 1.0 / (2.0 + g * acts.sum(dim=(2, 3), keepdim=True))
    channel_weights = acts[0, 0].numel() * alpha * g.relu()
    cam = (channel_weights * acts).sum(dim=1)
    ours = create_explainer("gradcampp", model, target_layer="1")(images, TARGETS)
    assert_close_maps(ours, reference_postprocess(cam))


def test_smoothgradcampp_sigma_zero_equals_gradcampp_on_resnet18(images):
    """Reference: Grad-CAM++ (Smooth Grad-CAM++ with no noise averages identical gradients)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    ref = create_explainer("gradcampp", model, target_layer="layer3")(images, TARGETS)
    ours = create_explainer("smoothgradcampp", model, target_layer="layer3", sigma=0.0,
                            n_samples=4)(images, TARGETS)
    assert_close_maps(ours, ref)


# ----------------------------------------------------------------------------------- Eigen-CAM
def rank1_model(a: torch.Tensor, b: torch.Tensor) -> nn.Sequential:
    """A 1x1 convolution with the rank-1 weight ``a b^T`` (no bias), GAP and a linear head.

    Args:
        a: ``(C,)`` output direction.
        b: ``(3,)`` input projection.

    Returns:
        Model in eval mode; target layer ``"0"`` outputs ``A_k(ij) = a_k (b^T x_ij)``.
    """
    conv = nn.Conv2d(3, len(a), 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.outer(a, b)[:, :, None, None])
    torch.manual_seed(0)
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(len(a), 3)).eval()


def test_eigencam_rank1_activation():
    """Reference: the first principal direction of ``s a^T`` is ``a``: map = minmax(relu(b^T x)).

    Image 0 has ``sum(b^T x) > 0``; image 1 is its negation, where eigencam.py's documented sign
    convention (projection sums to >= 0) flips the projection: map = minmax(relu(-b^T x)).
    """
    a = torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0, 1.5])
    b = torch.tensor([1.0, -0.5, 0.25])
    x = torch.randn(1, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    x[:, 0] += 0.5  # positive mean projection, both signs present
    images = torch.cat([x, -x])
    s = torch.einsum("c,bchw->bhw", b.double(), images.double())
    assert s[0].sum() > 0 and (s[0] < 0).any() and (s[0] > 0).any()
    expected = reference_postprocess(torch.stack([s[0], s[0]]), size=(48, 40))  # -s[1] == s[0]
    explainer = create_explainer("eigencam", rank1_model(a, b), target_layer="0", input_size=(3, 48, 40))
    ours = explainer(images, torch.tensor([0, 1]))
    assert_close_maps(ours, expected)
    # Class-agnostic: other targets give the same maps.
    assert torch.equal(ours, explainer(images, torch.tensor([2, 2])))


@pytest.mark.parametrize("center", [False, True])
def test_eigengradcam_rank1_gradient_times_activation(center):
    """Reference: with GAP + linear, ``dS_c/dA_k = W_ck / hw`` everywhere, so ``G * A = s (W_c * a)^T / hw`` is
    rank 1 and its first principal direction is ``W_c * a``: the projection is ``s`` (``center=False``, signed to
    sum >= 0) or ``s - mean(s)`` (``center=True``, signed so that its largest magnitude is positive)."""
    a = torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0, 1.5])
    b = torch.tensor([1.0, -0.5, 0.25])
    x = torch.randn(1, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    x[:, 0] += 0.5
    images = torch.cat([x, -x])
    s = torch.einsum("c,bchw->bhw", b.double(), images.double())
    if center:
        s = s - s.mean(dim=(1, 2), keepdim=True)
        s = torch.where((s.amax(dim=(1, 2)) < -s.amin(dim=(1, 2))).view(-1, 1, 1), -s, s)
    else:
        s = torch.stack([s[0], s[0]])  # -s[1] == s[0]: the sign rule flips image 1
    explainer = create_explainer("eigengradcam", rank1_model(a, b), target_layer="0", input_size=(3, 48, 40),
                                 center=center)
    assert_close_maps(explainer(images, torch.tensor([0, 1])), reference_postprocess(s, size=(48, 40)))


# ----------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("size", [(1, 1), (1, 5), (2, 2), (7, 3), (33, 48), (64, 64)])
def test_fakecam_is_ones_but_top_left(size):
    """Reference: Fake-CAM (Poppi et al. 2021): 1/N everywhere, 0 at the top-left, min-maxed."""
    images = torch.randn(3, 3, *size)
    maps = create_explainer("fakecam", nn.Identity())(images)
    expected = torch.ones(3, *size)
    expected[:, 0, 0] = 0.0
    if size == (1, 1):  # the single pixel is the top-left one: a constant map, all zero
        expected.zero_()
    assert maps.dtype == torch.float32
    assert torch.equal(maps, expected)


@pytest.mark.parametrize("sigma", [0.25, 0.5])
@pytest.mark.parametrize("size", [(65, 65), (33, 49), (64, 64), (32, 48)])
def test_center_gaussian(size, sigma):
    """Reference: ``exp(-d^2 / (2 (sigma min(H, W))^2))`` about ``((H-1)/2, (W-1)/2)``, min-maxed."""
    height, width = size
    maps = create_explainer("center", nn.Identity(), sigma=sigma)(torch.zeros(2, 3, height, width))
    ys = torch.arange(height, dtype=torch.float64)[:, None] - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float64)[None, :] - (width - 1) / 2
    gauss = torch.exp(-(ys ** 2 + xs ** 2) / (2 * (sigma * min(height, width)) ** 2))
    expected = (gauss - gauss.min()) / (gauss.max() - gauss.min())
    assert (maps - expected).abs().max().item() <= 1e-6
    assert torch.equal(maps[0], maps[1])
    # Symmetric about both axes (and the diagonal when square); maximal at the centre.
    assert torch.equal(maps, maps.flip(1)) and torch.equal(maps, maps.flip(2))
    if height == width:
        assert torch.equal(maps[0], maps[0].T)
    centre = maps[0, height // 2 - (height % 2 == 0):height // 2 + 1,
                  width // 2 - (width % 2 == 0):width // 2 + 1]
    assert (centre == 1.0).all()
    assert (maps == 1.0).sum().item() == 2 * centre.numel()


# ------------------------------------------------------------------------------ normalize_maps
@pytest.fixture
def raw_maps():
    """Two seeded 7x7 raw maps with positive and negative values."""
    return torch.randn(2, 7, 7, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("size", [(7, 7), (32, 24)])
def test_normalize_maps_scale_invariant(raw_maps, size):
    """Reference: NOTES.md section 4 (no epsilon: the result does not depend on the map's scale)."""
    base = normalize_maps(raw_maps, size)
    for scale in (1e-8, 1e8):
        assert (normalize_maps(raw_maps * scale, size) - base).abs().max().item() <= 1e-6
    assert_close_maps(base, reference_postprocess(raw_maps, size), atol=1e-6)


@pytest.mark.parametrize("size", [(7, 7), (32, 24)])
def test_normalize_maps_range_dtype_and_extremes(raw_maps, size):
    """Reference: NOTES.md section 4 (per-image min-max to [0, 1], float32)."""
    out = normalize_maps(raw_maps.double(), size)
    assert out.dtype == torch.float32 and out.shape == (2, *size)
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert out.flatten(1).amin(dim=1).tolist() == [0.0, 0.0]
    assert out.flatten(1).amax(dim=1).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("size", [(7, 7), (32, 24)])
def test_normalize_maps_degenerate_maps(raw_maps, size):
    """Reference: NOTES.md section 4 (all-zero stays zero) and normalize_maps' documented policy."""
    maps = torch.stack([torch.zeros(7, 7), torch.full((7, 7), 3.0), -raw_maps[0].abs(), raw_maps[1]])
    out = normalize_maps(maps, size)
    assert torch.equal(out[:3], torch.zeros(3, *size))  # zero, constant, all non-positive
    assert out[3].max().item() == 1.0  # other images in the batch are unaffected


@pytest.mark.parametrize("size", [(7, 7), (32, 24)])
def test_normalize_maps_nan_poisons_only_its_image(raw_maps, size):
    """Reference: normalize_maps' documented policy (a non-finite map becomes all NaN)."""
    maps = raw_maps.clone()
    maps[0, 3, 4] = float("nan")
    out = normalize_maps(maps, size)
    assert out[0].isnan().all()
    assert out[1].isfinite().all() and torch.equal(out[1], normalize_maps(raw_maps[1:], size)[0])


@pytest.mark.parametrize("value", [
    float("inf"),
    float("-inf"),
])
def test_normalize_maps_infinite_value_gives_nan(raw_maps, value):
    """Reference: normalize_maps' docstring: "a map with a non-finite value becomes all NaN"."""
    maps = raw_maps.clone()
    maps[0, 0, 0] = value
    assert normalize_maps(maps, (7, 7))[0].isnan().all()


# ----------------------------------------------------------------------------------- Shapley-CAM
def test_shapleycam_rest_on_a_gap_linear_head():
    """Reference: with ``A`` the 1x1 convolution's output, GAP and ``y = W mean(A) + b``, ReST ``S = 2 y_c - LSE(y)``
    has ``dS/dA_k = (2 W_c - W^T p)_k / hw`` and ``H A = -(1 / hw) W^T (diag p - p p^T) W mean(A)`` at every
    position, so ``w = (2 W_c - W^T p) / hw + W^T (diag p - p p^T) W mean(A) / (2 hw)``; with the logit the
    Hessian is zero and Shapley-CAM is Grad-CAM."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    images, targets = torch.randn(2, 3, 12, 10), torch.tensor([3, 1])
    with torch.no_grad():
        acts = model[0](images).double()
    weight, bias, hw = model[3].weight.double(), model[3].bias.double(), 12 * 10
    mean = acts.mean(dim=(2, 3))
    probs = (mean @ weight.T + bias).softmax(dim=1)
    expected = []
    for i, c in enumerate(targets.tolist()):
        cov = torch.diag(probs[i]) - torch.outer(probs[i], probs[i])
        w = (2 * weight[c] - weight.T @ probs[i]) / hw + weight.T @ cov @ weight @ mean[i] / (2 * hw)
        expected.append(torch.einsum("k,khw->hw", w, acts[i]))
    ours = create_explainer("shapleycam", model, target_layer="0", input_size=(3, 12, 10))(images, targets)
    assert_close_maps(ours, reference_postprocess(torch.stack(expected), size=(12, 10)))
    logit = create_explainer("shapleycam", model, target_layer="0", input_size=(3, 12, 10), score="logit")
    gradcam = create_explainer("gradcam", model, target_layer="0", input_size=(3, 12, 10))
    assert torch.allclose(logit(images, targets), gradcam(images, targets), atol=1e-6)
