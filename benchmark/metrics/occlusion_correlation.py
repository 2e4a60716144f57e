"""Rank correlation with occlusion (Grad-CAM paper Sec. 5.3; Nagy et al., Table 3) as a Metric.

The maths lives in :mod:`benchmark.metrics.functional.occlusion_correlation`; the occlusion maps
come from the registered explainer ``"occlusion"`` (:meth:`Occlusion.signed_maps`). They depend
only on the model, the images, the classes and the occlusion settings -- not on the explainer
being evaluated -- so a module-level cache of size 1 keeps the last batch's signed maps: the
metric objects of every explainer of the same batch share one occlusion run. The key is
(settings, ``id(model)``, dataset indices, targets, ``images.data_ptr()``, shape, dtype, device);
the entry keeps references to the model and images, so neither address can be reused by another
object while it is cached (an image batch modified in place is not detected).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch  # noqa: F401  (doctest namespace)
from torch import Tensor, nn

from benchmark.explainers import create_explainer
from benchmark.explainers.occlusion import check_occlusion_args
from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional.insertion_deletion import _check_positive_int
from benchmark.metrics.functional.occlusion_correlation import occlusion_correlation

__all__ = ["OcclusionCorrelation", "clear_occlusion_cache"]

#: ``[key, model, images, occlusion explainer, signed maps]`` of the last batch, or empty
_CACHE: list = []


def clear_occlusion_cache() -> None:
    """Forget the cached occlusion maps (and the model and images they hold)."""
    _CACHE.clear()


def _key(settings: Tuple, model: nn.Module, images: Tensor, targets: Tensor, indices: Optional[Tensor]) -> Tuple:
    return (settings, id(model), None if indices is None else tuple(indices.tolist()), tuple(targets.tolist()),
            images.data_ptr(), tuple(images.shape), images.dtype, str(images.device))


class OcclusionCorrelation(PerSampleMetric):
    """Spearman correlation between the map and the signed occlusion map, both pooled to ``size x size``.

    Per sample ``rho = Spearman(pool(map), pool(occlusion))`` (average ranks for ties; raw, in
    ``[-1, 1]``), the occlusion map being the signed class-score drop of ``patch_size`` patches of
    ``fill`` slid with ``stride`` (:mod:`benchmark.explainers.occlusion`); NaN when either pooled map
    is constant (``n_invalid``, ``nan_policy``).

    Args:
        size: the pooled side (14: the Grad-CAM paper's 14 x 14).
        patch_size, stride, fill, chunk_size, score: the occlusion settings (45, 1, 0.0, 256,
            ``"logit"``: the study's).
        nan_policy: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Cost: one occlusion map per image and class -- ``Occlusion.positions(H, W)`` forwards, i.e.
    ``(ceil((H - 1) / stride) + 1) * (ceil((W - 1) / stride) + 1)`` for an odd patch (50,176 per 224 x 224
    image at stride 1), batched ``chunk_size`` occluded images per forward -- shared by all explainers of a
    batch (see the module).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0] * 4]))
        >>> metric = OcclusionCorrelation(size=2, patch_size=1)  # occlusion map = weight * pixel
        >>> metric.update(model, torch.ones(1, 1, 2, 2), torch.tensor([[[0.0, 0.1], [0.7, 0.2]]]), torch.tensor([0]))
        >>> metric.compute()  # ranks (1, 2, 4, 3) against (1, 2, 3, 4)
        tensor(0.8000, dtype=torch.float64)
    """

    higher_is_better = True
    in_default_run = False  # a reproduction-study metric: runs when named
    needs = frozenset({"model"})

    def __init__(self, size: int = 14, patch_size: int = 45, stride: int = 1, fill: float = 0.0,
                 chunk_size: int = 256, score: str = "logit", nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.size = _check_positive_int(size, "size")
        self.occlusion_args = check_occlusion_args(patch_size, stride, fill, chunk_size, score)

    def occlusion_maps(self, model: nn.Module, images: Tensor, targets: Tensor,
                       indices: Optional[Tensor] = None) -> Tensor:
        """``(B, H, W)`` signed occlusion maps of ``targets``, from the cache when the batch was seen last."""
        settings = tuple(sorted(self.occlusion_args.items()))
        key = _key(settings, model, images, targets, indices)
        if _CACHE and _CACHE[0] == key:
            return _CACHE[4]
        explainer: Any = None
        if _CACHE and _CACHE[0][:2] == key[:2] and _CACHE[3].input_size == tuple(images.shape[1:]):
            explainer = _CACHE[3]  # same model and settings: reuse the explainer
        if explainer is None:
            explainer = create_explainer("occlusion", model, input_size=tuple(images.shape[1:]),
                                         **self.occlusion_args)
        maps = explainer.signed_maps(images, targets)
        _CACHE[:] = [key, model, images, explainer, maps]
        return maps

    def update(self, model: nn.Module, images: Tensor, saliency: Tensor, targets: Tensor,
               indices: Optional[Tensor] = None) -> None:
        """Score ``(B, H, W)`` maps of ``targets`` on ``images`` against their occlusion maps."""
        occlusion = self.occlusion_maps(model, images, targets, indices)
        self.store(occlusion_correlation(saliency, occlusion, self.size, reduction="none", nan_policy="propagate"),
                   indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``model``, ``images``, ``saliency``, ``targets`` and ``indices``."""
        if inputs.model is None:
            raise ValueError(f"{type(self).__name__} needs `inputs.model` (its `needs` lists 'model').")
        self.update(inputs.model, inputs.images, inputs.saliency, inputs.targets, inputs.indices)
