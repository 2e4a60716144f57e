"""SS-CAM and IS-CAM against torch-cam 0.5.0 (test-only) and against a direct transcription of IS-CAM's formula.

The target layer runs at the input's resolution, so torch-cam's min-max before upsampling and ours after it are the
same masks (torch-cam adds 1e-8 to the span: 1e-8 relative). torch-cam soft-maxes over every channel, all-zero ones
included, and ours over the channels that can change the map: the maps differ by a positive factor, which the
min-max removes.
"""
import pytest
import torch
from torch import nn

from benchmark.explainers import BaseExplainer, create_explainer
from benchmark.explainers.iscam import integration_coefficients

torchcam_methods = pytest.importorskip("torchcam.methods")
SIZE, CLASSES = 12, 5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES)).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


TARGETS = [4, 0, 2]


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.double().flatten(1)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    return ((flat - low) / (high - low)).view_as(maps)


def _torchcam(cls, model, images, **kwargs) -> torch.Tensor:
    with cls(model, target_layer="1", input_shape=(3, SIZE, SIZE), batch_size=7, **kwargs) as extractor:
        with torch.no_grad():
            scores = model(images)
        maps = extractor(TARGETS, scores)[0]
    return _minmax(maps)


class _Replay:
    """Stands in for torch-cam's noise distribution: returns the given draws in order."""

    def __init__(self, draws):
        self.draws = iter(draws)

    def sample(self, shape):
        draw = next(self.draws)
        assert tuple(draw.shape) == tuple(shape)
        return draw


def test_sscam_equals_torchcam_given_the_same_noise(model, images):
    n, sigma, indices = 4, 0.7, torch.tensor([11, 3, 250])
    ours = create_explainer("sscam", model, target_layer="1", input_size=(3, SIZE, SIZE), n_samples=n,
                            sigma=sigma, chunk_size=5)
    maps = ours(images, torch.tensor(TARGETS), indices).double()
    # our documented stream: each image's generator draws one (C, H, W) sample per step; torch-cam draws (B, C, H, W)
    generators = BaseExplainer.sample_generators(indices, len(images), 0)
    per_image = [[torch.randn((6, 1, SIZE, SIZE), generator=g) for _ in range(n)] for g in generators]
    draws = [sigma * torch.stack([per_image[b][s][:, 0] for b in range(len(images))]) for s in range(n)]
    with torchcam_methods.SSCAM(model, target_layer="1", input_shape=(3, SIZE, SIZE), batch_size=7,
                                num_samples=n, std=sigma) as extractor:
        extractor._distrib = _Replay(draws)
        with torch.no_grad():
            scores = model(images)
        ref = _minmax(extractor(TARGETS, scores)[0])
    assert (maps - ref).abs().max() <= 1e-5
    # the noise matters: another seed gives other maps, and sigma = 0 is Score-CAM with the channel softmax
    other = create_explainer("sscam", model, target_layer="1", input_size=(3, SIZE, SIZE), n_samples=n,
                             sigma=sigma, seed=1)(images, torch.tensor(TARGETS), indices)
    assert (other - maps).abs().max() > 1e-3
    smooth0 = create_explainer("sscam", model, target_layer="1", input_size=(3, SIZE, SIZE), n_samples=2, sigma=0.0)
    score = create_explainer("scorecam", model, target_layer="1", input_size=(3, SIZE, SIZE), channel_softmax=True)
    assert (smooth0(images, torch.tensor(TARGETS)) - score(images, torch.tensor(TARGETS))).abs().max() <= 1e-5


def test_sscam_maps_do_not_depend_on_batching(model, images):
    explainer = create_explainer("sscam", model, target_layer="1", input_size=(3, SIZE, SIZE), n_samples=3)
    indices = torch.tensor([5, 6, 7])
    whole = explainer(images, torch.tensor(TARGETS), indices)
    alone = torch.cat([explainer(images[i:i + 1], torch.tensor(TARGETS[i:i + 1]), indices[i:i + 1]) for i in range(3)])
    assert (whole - alone).abs().max() <= 1e-6


def test_iscam_torchcam_schedule_equals_torchcam(model, images):
    ours = create_explainer("iscam", model, target_layer="1", input_size=(3, SIZE, SIZE), n_samples=6,
                            schedule="torch-cam", chunk_size=4)
    maps = ours(images, torch.tensor(TARGETS)).double()
    ref = _torchcam(torchcam_methods.ISCAM, model, images, num_samples=6)
    assert (maps - ref).abs().max() <= 1e-5
    paper = create_explainer("iscam", model, target_layer="1", input_size=(3, SIZE, SIZE), n_samples=6)
    assert (paper(images, torch.tensor(TARGETS)).double() - ref).abs().max() > 1e-3  # the off-by-one matters


def _paper_iscam(model, image, target, n):
    """The formula, written out: M_i = sum_{j=0}^{i-1} (j/N) x * M_k for i = 0..N, s_k = 1/N sum_i (y_c(M_i) - y_c(x)),
    w = softmax_k(s), cam = ReLU(sum_k w_k A_k); float64 on a float64 copy of the model."""
    model = model.double()
    x = image.double()[None]
    acts = model[:2](x)[0]  # (C, H, W) at the input's resolution
    flat = acts.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    masks = torch.stack([(a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)
                         for a, lo, hi in zip(acts, low, high)])
    with torch.no_grad():
        base = model(x)[0, target]
        scores = []
        for k in range(len(acts)):
            total, path = 0.0, torch.zeros_like(x)
            for i in range(n + 1):
                total += model(path)[0, target] - base  # M_i: the sum over j < i so far
                path = path + (i / n) * x * masks[k]
            scores.append(total / n)
    weights = torch.softmax(torch.stack(scores), dim=0)
    return (weights[:, None, None] * acts).sum(dim=0).relu()


def test_iscam_paper_schedule_equals_a_transcription_of_the_formula(model, images):
    n = 5
    ours = create_explainer("iscam", model, target_layer="1", input_size=(3, SIZE, SIZE), n_samples=n, chunk_size=3)
    maps = ours(images, torch.tensor(TARGETS)).double()
    ref = _minmax(torch.stack([_paper_iscam(model, images[b], TARGETS[b], n) for b in range(len(images))]))
    model.float()
    assert (maps - ref).abs().max() <= 1e-5


def test_iscam_coefficients_and_a_linear_closed_form():
    """For a model linear in its input, ``y_c(c x * M_k) = c <W_c, x * M_k> + b_c``: the IS-CAM weights are
    ``softmax(kappa <W_c, x * M_k>)`` with ``kappa = sum_i c_i / N`` ((N^2 - 1) / (6N) for the paper's schedule)."""
    n = 7
    assert integration_coefficients(n).sum().item() == pytest.approx((n * n - 1) / 6)
    assert integration_coefficients(n, "torch-cam").sum().item() == pytest.approx((n + 1) * (n + 2) / 6)
    torch.manual_seed(3)
    gate = nn.Conv2d(3, 4, 1)  # the target layer: 4 channels at the input's resolution
    head = nn.Linear(3 * 6 * 6, CLASSES)
    model = nn.Sequential(nn.Identity(), nn.Flatten(), head).eval()
    x = torch.randn(1, 3, 6, 6)
    acts = gate(x).exp().detach()  # positive activations, so the map is not cut by the ReLU

    class Hooked(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.model = nn.Identity(), model

        def forward(self, images):
            self.layer(gate(images).exp())  # the layer only supplies the masks
            return self.model(images)

    net = Hooked().eval()
    explainer = create_explainer("iscam", net, target_layer="layer", input_size=(3, 6, 6), n_samples=n)
    flat = acts[0].flatten(1)
    masks = (acts[0] - flat.min(1).values[:, None, None]) / (flat.max(1).values - flat.min(1).values)[:, None, None]
    dots = torch.stack([(head.weight[2].view(3, 6, 6) * x[0] * m).sum() for m in masks]).detach().double()
    weights = torch.softmax((n * n - 1) / (6 * n) * dots, dim=0)
    expected = _minmax((weights[:, None, None] * acts[0].double()).sum(0).relu()[None])
    assert (explainer(x, torch.tensor([2])).double() - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["sscam", "iscam"])
def test_score_variants_run_on_vision_transformer_tokens(name):
    """Through the layout adapter: the masks come from the 4 x 4 patch-token grid of a timm ViT block."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5).eval()
    explainer = create_explainer(name, vit, input_size=(3, 32, 32), n_samples=2, chunk_size=256)
    assert str(explainer.layout) == "tokens:1"
    maps = explainer(torch.randn(2, 3, 32, 32), torch.tensor([0, 3]), torch.tensor([1, 2]))
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all() and (maps.amax(dim=(1, 2)) == 1).all()
