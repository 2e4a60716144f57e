"""RISE against a transcription of the authors' code (eclique/RISE ``explanations.py``: ``generate_masks`` with
``np.random`` and scikit-image's ``resize``, and the forward ``p^T masks / N / p1``)."""
import numpy as np
import pytest
import torch
from torch import nn

from benchmark.explainers import create_explainer

resize = pytest.importorskip("skimage.transform").resize


def authors_masks(n, s, p1, input_size, seed):
    """The authors' ``generate_masks`` (global numpy RNG seeded first), returned as ``(N, H, W)``."""
    np.random.seed(seed)
    cell_size = np.ceil(np.array(input_size) / s)
    up_size = (s + 1) * cell_size
    grid = (np.random.rand(n, s, s) < p1).astype("float32")
    masks = np.empty((n, *input_size))
    for i in range(n):
        x = np.random.randint(0, cell_size[0])
        y = np.random.randint(0, cell_size[1])
        masks[i] = resize(grid[i], up_size, order=1, mode="reflect",
                          anti_aliasing=False)[x:x + input_size[0], y:y + input_size[1]]
    return masks


def _cnn(classes=5):
    torch.manual_seed(0)  # no batch norm: the folded inference copy equals the model to float rounding
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)).eval()


@pytest.mark.parametrize("size, s, seed", [((64, 48), 7, 0), ((40, 40), 8, 3), ((33, 50), 5, 1)])
def test_masks_equal_the_authors_generator(size, s, seed):
    rise = create_explainer("rise", _cnn(), input_size=(3, *size), n_masks=40, grid_size=s, p1=0.5, seed=seed)
    ours = rise.masks(*size).numpy()
    theirs = authors_masks(40, s, 0.5, size, seed)
    assert np.abs(ours - theirs).max() <= 1e-6
    assert 0.2 < theirs.mean() < 0.8 and (theirs > 0).any() and (theirs < 1).any()  # real, varied masks
    part = rise.masks(*size, 10, 25).numpy()  # chunks are slices of the same set
    assert np.abs(part - theirs[10:25]).max() <= 1e-6


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_saliency_equals_the_authors_forward(score):
    model, size, n, p1 = _cnn(), (32, 40), 60, 0.4
    images, targets = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 4, 2])
    rise = create_explainer("rise", model, input_size=(3, *size), n_masks=n, grid_size=6, p1=p1, seed=5,
                            chunk_size=25, score=score)
    raw = rise.unnormalized_maps(images, targets).double()
    masks = torch.from_numpy(authors_masks(n, 6, p1, size, 5)).float()
    for b in range(3):
        with torch.no_grad():
            out = model(masks[:, None] * images[b])  # the authors' stack = masks * x
        p = out.softmax(dim=1) if score == "probability" else out
        sal = (p.T.double() @ masks.view(n, -1).double()).view(-1, *size) / n / p1
        assert (raw[b] - sal[targets[b]]).abs().max() <= 1e-5 * sal[targets[b]].abs().max()
    assert torch.equal(rise(images, targets)[1:], rise(images[1:], targets[1:]))  # the same bytes in any batch


def test_arguments_are_checked():
    for bad in ({"grid_size": 1}, {"p1": 0.0}, {"p1": 1.5}, {"n_masks": 0}, {"seed": -1}, {"score": "prob"}):
        with pytest.raises(ValueError):
            create_explainer("rise", _cnn(), input_size=(3, 32, 32), **bad)
