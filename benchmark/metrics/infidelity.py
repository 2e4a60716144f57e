"""Infidelity and max-sensitivity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS
2019) as per-sample Metrics.

The maths -- the perturbations, the optimal scaling, how a ``(H, W)`` map becomes an attribution, the relative
sensitivity and how both differ from the authors' code and captum -- lives in
:mod:`benchmark.metrics.functional.infidelity` and :mod:`benchmark.metrics.functional.sensitivity`. Each
stored row is the sample's value (float64); the draws are seeded per sample by its dataset index and each
sample runs in its own forwards / explainer calls, so 1 and N processes, any batching, give the same rows.
A sample with a non-finite map is undefined (NaN, ``n_invalid``, ``nan_policy``).

All three are opt-in (``in_default_run = False``): infidelity costs ``1 + n_perturb_samples`` (11) forwards per
image and metric, max-sensitivity ``n_perturb_samples`` (10) explainer calls per image -- ten times the
explainer's own cost (Score-CAM: ~170 s per 224 x 224 image on two CPU threads). Name them, e.g.
``--metrics+=[infidelity_square, max_sensitivity]``.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Optional, Sequence, Union

import torch  # noqa: F401  (the examples' namespace)
from torch import Tensor, nn

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import check_choice
from benchmark.metrics.functional.fgsm import IMAGENET_STD, channel_values
from benchmark.metrics.functional.infidelity import SCORES, _check_options, infidelity
from benchmark.metrics.functional.insertion_deletion import _check_positive_int
from benchmark.metrics.functional.sensitivity import NORMS, _check_radius, max_sensitivity

__all__ = ["InfidelityGaussian", "InfidelitySquare", "MaxSensitivity"]


class _Infidelity(PerSampleMetric):
    higher_is_better = False
    needs = frozenset({"model"})
    in_default_run = False  # 1 + n_perturb_samples forwards per image: opt in by name
    plot_lower_bound = 0.0
    perturbation: ClassVar[str] = "square"

    def __init__(self, n_perturb_samples: int = 10, normalize: bool = True, score: str = "probability",
                 sigma: float = 0.2, square_size: int = 32, baseline: float = 0.0,
                 std: Union[float, Sequence[float]] = IMAGENET_STD, seed: int = 0, chunk_size: int = 64,
                 nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        _check_options(self.perturbation, n_perturb_samples, sigma, square_size, baseline, seed)
        self.n_perturb_samples, self.sigma, self.square_size = n_perturb_samples, float(sigma), square_size
        self.baseline, self.seed = float(baseline), seed
        self.normalize = bool(normalize)
        self.score = check_choice(score, "score", SCORES)
        self.std = channel_values(std, "std", positive=True)
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")

    def update(self, model: nn.Module, images: Tensor, saliency: Tensor, targets: Tensor,
               indices: Optional[Tensor] = None) -> None:
        """Score a batch of ``(B, H, W)`` maps (or ``(B, C, H, W)`` attributions); store one value per sample."""
        values = infidelity(model, images, saliency, targets, self.perturbation, self.n_perturb_samples,
                            self.normalize, self.score, self.sigma, self.square_size, self.baseline, self.std,
                            indices, self.seed, self.chunk_size, reduction="none", nan_policy="propagate")
        self.store(values, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use the module's model, images, maps, targets and dataset indices."""
        if inputs.model is None:
            raise ValueError(f"{type(self).__name__} needs `inputs.model` (its `needs` lists 'model').")
        self.update(inputs.model, inputs.images, inputs.saliency, inputs.targets, inputs.indices)


class InfidelitySquare(_Infidelity):
    """Infidelity under square removal (Yeh et al., NeurIPS 2019), optimally scaled; lower is better.

    ``INFD = mean_i (beta I_i^T Phi - (f(x) - f(x - I_i * (x - baseline))))^2`` over ``n_perturb_samples`` random
    ``square_size`` squares ``I_i`` (0/1 indicators, set to ``baseline`` in every channel), ``Phi`` the map
    broadcast over the channels, ``f`` the class's softmax probability, ``beta`` optimal
    (:func:`~benchmark.metrics.functional.infidelity.infidelity`).

    Args:
        n_perturb_samples: squares per image (10, captum's default).
        square_size: the square's side in pixels (32: one cell of a 7 x 7 CAM on 224 x 224; clipped to the image).
        baseline: the value the square is set to (0: the mean colour of normalised inputs).
        normalize: rescale the map by the optimal ``beta`` (default True, the authors' code; captum: False).
        score: ``"probability"`` (default) or ``"logit"``.
        seed: the draws' seed (each sample's generator: ``(seed, dataset index)``).
        chunk_size: images per forward.
        nan_policy: non-finite maps give NaN rows: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> metric = InfidelitySquare(square_size=2, score="logit", normalize=False)  # the square is the image
        >>> images, targets = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]]), torch.tensor([0])
        >>> metric.update(model, images, torch.tensor([[[1.0, 0.0], [0.5, 0.2]]]), targets)  # (1.7 - 4)^2
        >>> metric.update(model, images, images[:, 0] / 2, targets, torch.tensor([1]))  # (2 - 4)^2
        >>> metric.compute()
        tensor(4.6450, dtype=torch.float64)
    """

    perturbation = "square"

    def __init__(self, n_perturb_samples: int = 10, square_size: int = 32, baseline: float = 0.0,
                 normalize: bool = True, score: str = "probability", seed: int = 0, chunk_size: int = 64,
                 nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(n_perturb_samples, normalize, score, square_size=square_size, baseline=baseline, seed=seed,
                         chunk_size=chunk_size, nan_policy=nan_policy, **kwargs)


class InfidelityGaussian(_Infidelity):
    """Infidelity under Gaussian noise (Yeh et al., NeurIPS 2019), optimally scaled; lower is better.

    ``INFD = mean_i (beta I_i^T Phi - (f(x) - f(x - I_i)))^2`` over ``n_perturb_samples`` draws
    ``I_i ~ N(0, (sigma / std_c)^2)`` per element, ``Phi`` the map broadcast over the channels, ``f`` the
    class's softmax probability, ``beta`` optimal (:func:`~benchmark.metrics.functional.infidelity.infidelity`).

    Args:
        n_perturb_samples: draws per image (10, captum's default).
        sigma: the noise std in ``[0, 1]`` pixel units (0.2, the authors' noise scale).
        std: the model's input normalisation std (ImageNet's), which scales ``sigma`` into the inputs' units.
        normalize, score, seed, chunk_size, nan_policy: as :class:`InfidelitySquare`.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> metric = InfidelityGaussian(score="logit", std=1.0)
        >>> metric.update(model, torch.rand(2, 1, 2, 2), torch.full((2, 2, 2), 0.3), torch.tensor([0, 0]))
        >>> round(metric.compute().item(), 8)  # a constant map is the gradient up to beta: exact
        0.0
    """

    perturbation = "gaussian"

    def __init__(self, n_perturb_samples: int = 10, sigma: float = 0.2,
                 std: Union[float, Sequence[float]] = IMAGENET_STD, normalize: bool = True,
                 score: str = "probability", seed: int = 0, chunk_size: int = 64, nan_policy: str = "omit",
                 **kwargs) -> None:
        super().__init__(n_perturb_samples, normalize, score, sigma=sigma, std=std, seed=seed, chunk_size=chunk_size,
                         nan_policy=nan_policy, **kwargs)


class MaxSensitivity(PerSampleMetric):
    """Max-sensitivity (Yeh et al., NeurIPS 2019), relative to the map's norm as captum; lower is better.

    ``SENS_MAX = max_j ||Phi(x + delta_j) - Phi(x)||_F / ||Phi(x)||_F`` over ``n_perturb_samples`` points
    ``delta_j`` uniform in the L-infinity ball of radius ``radius / std_c``, the explainer re-run on each for the
    same class (:func:`~benchmark.metrics.functional.sensitivity.max_sensitivity`).

    Args:
        n_perturb_samples: points per image (10, captum's default).
        radius: the ball's radius in ``[0, 1]`` pixel units (0.02, captum's default radius).
        std: the model's input normalisation std (ImageNet's); ``1`` for a radius in the inputs' units.
        norm: ``"fro"`` (captum's default) or ``"inf"``.
        seed: the draws' seed (each sample's generator: ``(seed, dataset index)``).
        chunk_size: perturbed images per explainer call.
        nan_policy: non-finite maps give NaN rows: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> explain = lambda images, classes, indices=None: torch.ones(len(images), 2, 2)  # ignores its input
        >>> metric = MaxSensitivity()
        >>> metric.update(torch.rand(3, 3, 2, 2), torch.ones(3, 2, 2), torch.tensor([0, 1, 0]), explain)
        >>> metric.compute()
        tensor(0., dtype=torch.float64)
    """

    higher_is_better = False
    needs = frozenset({"explain"})
    in_default_run = False  # n_perturb_samples explainer calls per image: opt in by name
    plot_lower_bound = 0.0

    def __init__(self, n_perturb_samples: int = 10, radius: float = 0.02,
                 std: Union[float, Sequence[float]] = IMAGENET_STD, norm: str = "fro", seed: int = 0,
                 chunk_size: int = 64, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.n_perturb_samples = _check_positive_int(n_perturb_samples, "n_perturb_samples")
        self.radius = _check_radius(radius)
        self.std = channel_values(std, "std", positive=True)
        self.norm = check_choice(norm, "norm", NORMS)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Expected `seed` to be an int >= 0, but got {seed!r}.")
        self.seed = seed
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")

    def update(self, images: Tensor, saliency: Tensor, targets: Tensor, explain: Callable[..., Tensor],
               indices: Optional[Tensor] = None) -> None:
        """Score a batch; ``explain(images, classes, indices=None)`` gives the maps on the perturbed inputs."""
        values = max_sensitivity(explain, images, saliency, targets, self.n_perturb_samples, self.radius, self.std,
                                 self.norm, indices, self.seed, self.chunk_size, reduction="none",
                                 nan_policy="propagate")
        self.store(values, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use the module's images, maps, targets, ``explain`` and dataset indices."""
        if inputs.explain is None:
            raise ValueError(f"{type(self).__name__} needs `inputs.explain` (its `needs` lists 'explain').")
        self.update(inputs.images, inputs.saliency, inputs.targets, inputs.explain, inputs.indices)
