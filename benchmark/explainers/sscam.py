"""SS-CAM (Wang, Naidu et al., 2020, "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization").

Score-CAM with every channel's mask smoothed by Gaussian noise. With ``M_k`` the upsampled, min-max normalised
activation (:func:`~benchmark.explainers.scorecam.normalized_masks`), the channel score is the target logit
averaged over ``n_samples`` noisy masks, ``s_k = 1/N sum_i y_c(x * (M_k + delta_ik))`` with
``delta_ik ~ N(0, sigma^2)`` per pixel, and ``w = softmax_k(s_k)``. The formula's baseline score ``y_c(X_b)`` is
the same for every channel and cancels in the softmax. The formula and the defaults N = 35, sigma = 2 are those
written in torch-cam's ``SSCAM``; the paper could not be read here (docs/explainers.md). Equal to torch-cam
0.5.0's ``SSCAM`` given the same noise (tested).

Noise: each image's generator, seeded by (seed, dataset index), draws one ``(C, H, W)`` sample after another, so
maps do not depend on batching or on the number of processes. Cost: N forwards per channel that is not all zero,
in chunks of ``chunk_size`` on the inference copy. An all-zero channel adds nothing to the map, and its weight
only rescales the others, which the min-max normalisation removes.
"""
import torch
from torch import Tensor

from benchmark.explainers.base import CAMInputs
from benchmark.explainers.registry import register_explainer
from benchmark.explainers.scorecam import ScoreCAM, normalized_masks


@register_explainer
class SSCAM(ScoreCAM):
    """SS-CAM: channel weights = softmax over channels of the target logit averaged over noisy masks.

    Examples:
        >>> from torchvision.models import resnet18
        >>> explainer = SSCAM(resnet18(num_classes=10), n_samples=2, chunk_size=256)
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.equal(explainer(x, indices=torch.tensor([3])), explainer(x, indices=torch.tensor([3])))
        True
    """

    name = "sscam"
    in_default_run = False  # N x C forwards per image

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), n_samples: int = 35, sigma: float = 2.0,
                 seed: int = 0, chunk_size: int = 32, autocast=None, compile: bool = False, *, layout=None) -> None:
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"Expected `n_samples` to be a positive int, but got {n_samples!r}.")
        if not sigma >= 0:
            raise ValueError(f"Expected `sigma` >= 0, but got {sigma!r}.")
        super().__init__(model, target_layer, input_size, channel_softmax=True, chunk_size=chunk_size,
                         autocast=autocast, compile=compile, layout=layout)
        self.n_samples, self.sigma, self.seed = n_samples, float(sigma), int(seed)

    def weights(self, inputs: CAMInputs) -> Tensor:
        """``(B, k, C, 1, 1)`` weights of the ``(B, k)`` targets, from the same noisy forwards."""
        acts, images, classes = inputs.activations, inputs.images, inputs.targets
        used = acts.flatten(2).ne(0).any(dim=2)  # (B, C): the channels that can change the map
        scores = torch.full((len(acts), classes.shape[1], acts.shape[1]), float("-inf"), dtype=acts.dtype,
                            device=acts.device)
        for b, generator in enumerate(self.sample_generators(inputs.indices, len(images), self.seed)):
            masks = normalized_masks(acts[b], images.shape[-2:])
            live = used[b].nonzero().squeeze(1)
            total = acts.new_zeros(classes.shape[1], len(live))
            for _ in range(self.n_samples):  # every channel's noise is drawn, live or not: a fixed stream
                noise = torch.randn(masks.shape, generator=generator).to(masks)
                for pos in torch.arange(len(live), device=live.device).split(self.chunk_size):
                    k = live[pos]
                    out = self._masked_forward(images[b] * (masks[k] + self.sigma * noise[k]))
                    total[:, pos] += out[:, classes[b]].T.to(total.dtype)
            scores[b][:, live] = total / self.n_samples
        scores = torch.where(used.any(dim=1)[:, None, None], scores, torch.zeros_like(scores))  # all-zero layer
        return scores.softmax(dim=2).view(*scores.shape, 1, 1)
