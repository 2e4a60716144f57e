"""The model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018) as a
per-sample Metric.

The maths -- the layer groups, the seeded re-initialisation, Spearman and SSIM -- lives in
:mod:`benchmark.metrics.functional.mprt`. Each stored row holds, for the ``L`` randomized models (top group
first), ``[Spearman of |maps| x L, signed Spearman x L, SSIM x L]`` (float64). The randomized models depend only
on the model, ``layers`` and ``seed``, and each map on its own image (stochastic explainers are seeded by the
dataset index), so 1 and N processes, any batching, give the same rows.

The randomized copy of a backbone is built once per metric instance (cached, keyed by the model's identity and
device; two models' worth of memory), never per image, and the original model is never modified. The explainer
is re-built on the copy by a deep copy of the module's explainer in which the model, its modules and tensors
map to the copy's: same class, options and target layer name.

Opt-in (``in_default_run = False``): it costs ``L`` explainer calls per image (``L`` = the number of layer groups:
10 on ResNet-18, 17 on Inception v3, 7 on the synthetic ``plain_cnn``) -- ``L`` times the explainer's own cost.
Name it: ``--metrics+=[mprt]``.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import check_choice, reduce_values
from benchmark.metrics.functional.mprt import RANDOMIZATIONS, LayerSpec, RandomizedModel, mprt_similarity

__all__ = ["MPRT"]


class MPRT(PerSampleMetric):
    """Model-parameter randomization test (Adebayo et al., NeurIPS 2018): mean Spearman over layers; lower is better.

    ``MPRT = (1 / L) sum_k rho_S(|E(x; theta)|, |E(x; theta_k)|)``, ``theta_k`` the model with its ``k`` top layer
    groups re-initialised (``"cascading"``) or only its ``k``-th (``"independent"``), ``E`` the explainer's map
    of the same class, ``rho_S`` Spearman's rank correlation. Lower is better: a map that keeps its ranking when
    the parameters are destroyed does not depend on them (it fails the check, as Adebayo's edge detector and the
    model-independent ``center`` baseline, which score 1); a map that only looks like noise also scores low, so
    read it as a sanity check beside the other columns, not a ranking on its own. :meth:`extra_values` gives the
    mean signed Spearman (``spearman_signed``) and SSIM (``ssim``) and, per layer ``k = 1`` (top) ... ``L``,
    ``spearman_k`` and ``ssim_k``.

    Args:
        randomization: ``"cascading"`` (default, the paper's main test) or ``"independent"``.
        layers: the layer groups as module names (or lists of names), in forward order; default: the model's
            blocks (:func:`~benchmark.metrics.functional.mprt.layer_groups`).
        seed: the re-initialisation's seed.
        nan_policy: NaN maps give NaN rows: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> from benchmark.explainers import create_explainer
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> images, targets = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
        >>> center = create_explainer("center", net, input_size=(3, 16, 16))  # ignores the model
        >>> metric = MPRT()
        >>> metric.update(images, center(images, targets), targets, center)
        >>> metric.compute(), metric.extra_values()["ssim_3"], metric.layer_names
        (tensor(1., dtype=torch.float64), tensor(1., dtype=torch.float64), ['6', '2', '0'])
        >>> gradcam, metric = create_explainer("gradcam", net, input_size=(3, 16, 16)), MPRT()
        >>> metric.update(images, gradcam(images, targets), targets, gradcam)
        >>> bool(metric.compute() < 1)
        True
    """

    higher_is_better = False
    needs = frozenset({"explain"})
    in_default_run = False  # L explainer calls per image: opt in by name
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, randomization: str = "cascading", layers: Optional[Sequence[LayerSpec]] = None,
                 seed: int = 0, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.randomization = check_choice(randomization, "randomization", RANDOMIZATIONS)
        if layers is not None and (isinstance(layers, str) or not len(layers)):
            raise ValueError(f"Expected `layers` to be a non-empty list of module names, but got {layers!r}.")
        self.layers = None if layers is None else [v if isinstance(v, str) else list(v) for v in layers]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Expected `seed` to be an int >= 0, but got {seed!r}.")
        self.seed = seed
        #: (id(model), device) -> (model, its RandomizedModel); (id(explainer), id(copy)) -> (explainer, twin)
        self._randomized: Dict[Tuple[int, str], Tuple[nn.Module, RandomizedModel]] = {}
        self._twins: Dict[Tuple[int, int], Tuple[Any, Any]] = {}
        self.builds = 0  #: RandomizedModel builds so far (one per backbone and device)
        self.layer_names: List[str] = []  #: the last model's groups, top first (the rows' layer order)

    @property
    def n_layers(self) -> Optional[int]:
        """``L`` when known: the ``layers`` given, else the groups of the last model seen."""
        return len(self.layers) if self.layers is not None else (len(self.layer_names) or None)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_randomized"], state["_twins"] = {}, {}  # caches holding models: not copied nor pickled
        return state

    def randomized_model(self, model: nn.Module, example: Tensor) -> RandomizedModel:
        """The cached :class:`RandomizedModel` of ``model`` (built on first use, traced on ``example``)."""
        tensor = next(iter([*model.parameters(), *model.buffers()]), None)
        key = (id(model), str(tensor.device) if tensor is not None else "cpu")
        if key not in self._randomized:
            self._randomized[key] = (model, RandomizedModel(model, example.to(key[1]), self.layers, self.seed))
            self.builds += 1
        randomized = self._randomized[key][1]
        self.layer_names = randomized.names
        return randomized

    def _twin(self, explainer: Any, randomized: RandomizedModel) -> Any:
        """``explainer`` re-built on ``randomized.model``: a deep copy whose model, modules and tensors are the
        copy's (same class, options, target layer name); cached."""
        key = (id(explainer), id(randomized))
        if key not in self._twins:
            original, twin = explainer.model, randomized.model
            memo = {id(a): b for a, b in zip(original.modules(), twin.modules())}
            for named in ("named_parameters", "named_buffers"):
                theirs = dict(getattr(twin, named)())
                memo.update({id(t): theirs[n] for n, t in getattr(original, named)() if n in theirs})
            with torch.inference_mode(False):
                self._twins[key] = (explainer, copy.deepcopy(explainer, memo))
        return self._twins[key][1]

    def update(self, images: Tensor, saliency: Tensor, targets: Tensor, explainer: Any,
               indices: Optional[Tensor] = None) -> None:
        """Explain ``targets`` on ``images`` with each randomized model and store the similarities to ``saliency``.

        ``explainer`` is the explainer that made ``saliency`` (an object with a ``model`` attribute, called as
        ``explainer(images, targets, indices=indices)``).
        """
        model = getattr(explainer, "model", None)
        if not isinstance(model, nn.Module) or not callable(explainer):
            raise TypeError(f"Expected `explainer` to be a callable with a `model` nn.Module, but got "
                            f"{type(explainer).__name__}.")
        randomized = self.randomized_model(model, images)
        twin = self._twin(explainer, randomized)
        maps = []
        for k in range(len(randomized)):
            randomized.select(k, self.randomization)
            maps.append(twin(images, targets, indices=indices).to(saliency.device))
        values = mprt_similarity(saliency, torch.stack(maps, dim=1), reduction="none", nan_policy="propagate")
        self.store(values.flatten(1), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use the module's images, maps, targets, dataset indices and explainer (``inputs.explainer``)."""
        explainer = inputs.explainer
        if explainer is None or not isinstance(getattr(explainer, "model", None), nn.Module):
            raise ValueError(f"{type(self).__name__} needs `inputs.explainer` (its `needs` lists 'explain'), an "
                             "object with a `model`; got none.")
        self.update(inputs.images, inputs.saliency, inputs.targets, explainer, inputs.indices)

    @staticmethod
    def _blocks(values: Tensor) -> Tensor:
        """``(N, 3, L)``: Spearman of ``|maps|``, signed Spearman, SSIM per layer."""
        return values.view(len(values), 3, -1)

    def reduce(self, values: Tensor) -> Tensor:
        """The mean over samples (``nan_policy``) of each sample's mean Spearman (of ``|maps|``) over layers."""
        return reduce_values(self._blocks(values)[:, 0].mean(dim=1), "mean", self.nan_policy)

    def extra_reduce(self, values: Tensor) -> Dict[str, Tensor]:
        """Mean signed Spearman and SSIM over layers; Spearman and SSIM of each layer ``k`` (1 = top)."""
        blocks = self._blocks(values)
        out = {"spearman_signed": reduce_values(blocks[:, 1].mean(dim=1), "mean", self.nan_policy),
               "ssim": reduce_values(blocks[:, 2].mean(dim=1), "mean", self.nan_policy)}
        for k in range(blocks.shape[2]):
            out[f"spearman_{k + 1}"] = reduce_values(blocks[:, 0, k], "mean", self.nan_policy)
            out[f"ssim_{k + 1}"] = reduce_values(blocks[:, 2, k], "mean", self.nan_policy)
        return out
