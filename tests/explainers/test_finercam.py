"""Finer-CAM: a closed form on a GAP-linear model and the score by hand. Each convention against its peer (torch-cam
0.5.0 and pytorch-grad-cam 1.5.7's ``FinerCAM``) is in ``test_reference_peer_methods.py``.
"""
import numpy as np
import pytest
import torch
from torch import nn

from benchmark.explainers import create_explainer
from benchmark.explainers.finercam import finer_score, reference_classes


def test_closed_form_on_a_gap_linear_model():
    """``y = W GAP(A) + b``: ``dS/dA_k = (W_ck - alpha mean_t W_dt,k) / hw``; the references are the classes whose
    logits are nearest the target's (numpy's argsort, rank 0 being the target itself)."""
    torch.manual_seed(1)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    head = nn.Linear(8, 7)
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    x = torch.randn(3, 3, 10, 10)
    targets = [1, 4, 6]
    explainer = create_explainer("finercam", model, target_layer="0", input_size=(3, 10, 10), n_references=2)
    maps = explainer.unnormalized_maps(x, torch.tensor(targets)).double()
    with torch.no_grad():
        acts, logits = features(x).double(), model(x).double().numpy()
    for b, c in enumerate(targets):
        order = np.argsort(np.abs(logits[b] - logits[b, c]), kind="stable")
        refs = [int(k) for k in order if k != c][:2]
        w = head.weight.detach().double()
        weights = (w[c] - 0.6 * w[refs].mean(dim=0)) / 100
        expected = (weights[:, None, None] * acts[b]).sum(dim=0)
        assert (maps[b] - expected).abs().max() <= 1e-6 * expected.abs().max()


def test_reference_classes_and_scores_by_hand():
    logits = torch.tensor([[0.0, 5.0, 4.0, 4.5, 6.0], [1.0, 1.0, 3.0, 1.0, 0.0]])
    refs = reference_classes(logits, torch.tensor([1, 2]), 3)
    assert refs.tolist() == [[3, 2, 4], [0, 1, 3]]  # ties (distance 2 three times) to the lower index
    mean = finer_score(logits, torch.tensor([1, 2]), 3, alpha=0.5)
    assert torch.allclose(mean, torch.tensor([5 - 0.5 * (4.5 + 4 + 6) / 3, 3 - 0.5 * 1.0]))
    p = logits.softmax(dim=1)[0, [3, 2, 4]]
    soft = finer_score(logits[:1], torch.tensor([1]), 3, alpha=1.0, weighting="softmax")
    assert torch.allclose(soft, (p * (5 - torch.tensor([4.5, 4.0, 6.0]))).sum() / (p.sum() + 1e-9))
    with pytest.raises(ValueError, match="weighting"):
        finer_score(logits, torch.tensor([1, 2]), weighting="max")
    with pytest.raises(ValueError, match="other classes"):
        finer_score(torch.zeros(1, 1), torch.tensor([0]))


def test_finercam_runs_on_vision_transformer_tokens():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5).eval()
    explainer = create_explainer("finercam", vit, input_size=(3, 32, 32))
    assert str(explainer.layout) == "tokens:1"
    maps = explainer(torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
