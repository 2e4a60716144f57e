"""Score-CAM options: chunking is exact, skipping constant channels is exact, autocast is close."""
import pytest
import torch
from torch import nn

from benchmark.explainers import create_explainer, normalize_maps


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5)).eval()


@pytest.mark.parametrize("channel_softmax", [False, True])
def test_chunk_size_does_not_change_the_map(channel_softmax):
    model, x = _model(), torch.randn(3, 3, 32, 32)
    maps = [create_explainer("scorecam", model, target_layer="3", input_size=(3, 32, 32), chunk_size=n,
                             channel_softmax=channel_softmax)(x, torch.tensor([0, 1, 4])) for n in (1, 5, 1000)]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(maps[0], maps[2], rtol=0, atol=1e-5)


def _brute_force_channel_softmax(model, layer, x, targets):
    """Every channel scored, constant ones with an all-zero mask (as pytorch-grad-cam does)."""
    acts = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o.detach().clone()))
    with torch.no_grad():
        model(x)
        handle.remove()
        maps = []
        for b in range(len(x)):
            scores = []
            for k in range(acts[0].shape[1]):
                up = torch.nn.functional.interpolate(acts[0][b, k][None, None], size=x.shape[-2:], mode="bilinear")
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
                scores.append(model(x[b:b + 1] * mask)[0, targets[b]])
            weights = torch.stack(scores).softmax(0)
            maps.append((weights[:, None, None] * acts[0][b]).sum(0))
    return normalize_maps(torch.stack(maps), x.shape[-2:])


def test_constant_channels_skipped_exactly():
    """Dead and constant channels get no masked forward, yet the map equals scoring every channel."""
    model, x, targets = _model(), torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    with torch.no_grad():  # channel 0 dead (all zero), channel 1 constant positive
        model[2].weight[:2] = 0
        model[2].bias[0], model[2].bias[1] = -1.0, 0.5
    explainer = create_explainer("scorecam", model, target_layer="3", input_size=(3, 32, 32), channel_softmax=True)
    acts = explainer.forward_layer(x, targets, None, False).activations
    assert acts[:, 0].eq(0).all() and acts[:, 1].eq(0.5).all()
    reference = _brute_force_channel_softmax(model, model[3], x, targets)
    torch.testing.assert_close(explainer(x, targets), reference, rtol=0, atol=1e-5)


def test_autocast_close_to_float32_and_validated():
    model, x = _model(), torch.randn(2, 3, 32, 32)
    exact = create_explainer("scorecam", model, target_layer="3", input_size=(3, 32, 32))(x, torch.tensor([0, 3]))
    fast = create_explainer("scorecam", model, target_layer="3", input_size=(3, 32, 32),
                            autocast="bfloat16")(x, torch.tensor([0, 3]))
    assert (exact - fast).abs().max() < 0.1
    assert torch.corrcoef(torch.stack([exact.flatten(), fast.flatten()]))[0, 1] > 0.99
    with pytest.raises(ValueError, match="'float8'"):
        create_explainer("scorecam", model, target_layer="3", input_size=(3, 32, 32), autocast="float8")
