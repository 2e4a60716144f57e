"""ROAD, RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022).

Removing pixels by a fixed colour leaks the removal mask's shape to the model (class information leakage),
so ROAD fills the removed pixels by **noisy linear imputation**: per channel, each removed pixel ``i`` is
the weighted mean of its in-image 8-neighbours ``N(i)``, removed or kept, the kept pixels staying fixed::

    x_i = sum_{j in N(i)} w_ij x_j / sum_{j in N(i)} w_ij,   w = 1/6 (4 direct), 1/12 (4 diagonal)

(a sparse linear system, one unknown per removed pixel, solved once per mask for every channel; the
weights are renormalised at the image border, as the authors' ``NoisyLinearImputer``), then Gaussian noise
``N(0, noise^2)`` is added to the removed pixels. For an explained class ``c`` and a percentage ``q`` of
pixels removed (default ``q = 10, 20, ..., 90``)::

    MoRF(q) = softmax(f(impute(x, the q % most relevant pixels)))_c       (lower is better)
    LeRF(q) = softmax(f(impute(x, the q % least relevant pixels)))_c      (higher is better)
    ROAD    = mean_q curve(q)                                             (the reported value)

Conventions (the paper's and the authors' ``road_evaluation`` code unless said otherwise):

* order: ``argsort(saliency, descending=True, stable=True)`` over the raster-flattened map; ``k(q) =
  floor(q HW / 100)`` pixels are removed, the first ``k`` of the order (MoRF) or the last ``k`` (LeRF).
  The authors break ties by adding a fixed ``1e-4 N(0, 1)`` jitter (unseeded) to the map; here tied pixels
  go in raster order, as in deletion/insertion. The authors' LeRF removes ``HW - int(HW (1 - q))`` pixels
  (one more than ``k`` when ``q HW / 100`` is not an integer).
* space and noise: the authors impute the ``[0, 1]`` image before normalising it, with ``noise = 0.01``.
  The imputation commutes with a per-channel affine normalisation (its weights sum to 1), so here the
  model's normalised inputs are imputed and the noise of channel ``c`` is ``noise / std_c`` (``std``: the
  model's normalisation, ImageNet's by default; ``std=1`` for unnormalised inputs): the same in pixel units.
* seeding: the noise of each sample comes from a CPU generator seeded by ``seed * 1_000_003 + index``
  (its dataset index, as the stochastic explainers do), drawing one ``(C, H, W)`` field per percentage in
  order, so the values do not depend on the batching or the number of processes. MoRF and LeRF of one
  sample draw the same fields.
* ``removal="threshold"`` reproduces pytorch-grad-cam's masks instead (``pytorch_grad_cam.metrics.road``):
  its ``ROADMostRelevantFirst(percentile=p)`` keeps the pixels below ``np.percentile(saliency, p)`` and
  imputes the rest, i.e. about ``100 - p`` % of them (so its ``p`` is our ``100 - q``), every pixel tied
  with the threshold included; its LeRF does the same on ``1 - saliency``. Its averaging classes return
  ``mean_q (p_q - p(x))``, the score on the unperturbed image subtracted, with the logit as the default
  score and ``noise = 0.01`` in the normalised space; ``mean_q p_q`` here. In this mode a mask that
  removes every pixel (a constant map) has no imputation: NaN.
* the class probability is the softmax of the logits (float64); a map holding NaN gives a NaN curve, with
  no imputation and no forward run.

All imputed images of a batch -- ``B P`` (sample, percentage) pairs -- are built and run ``chunk_size`` per
forward under ``torch.inference_mode``, with the model in eval mode. Each pair costs one sparse LU
factorisation (``scipy.sparse.linalg.splu``, CPU).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.linalg import splu
from torch import Tensor, nn

from benchmark._utils import check_choice, check_positive_int, eval_mode
from benchmark.metrics.functional._common import reduce_values
from benchmark.metrics.functional.fgsm import IMAGENET_STD, channel_values
from benchmark.metrics.functional.insertion_deletion import _check_inputs

__all__ = ["PERCENTILES", "noisy_linear_impute", "removal_masks", "road_curve", "road_lerf", "road_morf"]

Model = Union[nn.Module, Callable[[Tensor], Tensor]]
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  #: the paper's percentages of removed pixels
ORDERS = ("morf", "lerf")
REMOVALS = ("rank", "threshold")
#: (row offset, column offset, weight) of the 8 neighbours (the authors' ``neighbors_weights``)
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12),
              (1, 0, 1 / 6), (1, 1, 1 / 12))


def _check_percentiles(percentiles: Sequence[float]) -> tuple:
    values = tuple(percentiles) if isinstance(percentiles, (list, tuple)) else None
    if not values or any(isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 100 for q in values):
        raise ValueError(f"Expected `percentiles` to be a non-empty sequence of numbers in (0, 100), but got "
                         f"{percentiles!r}.")
    return values


def _linear_fill(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``(C, n)`` float64 values of the ``n`` removed pixels (raster order) solving the 8-neighbour system."""
    height, width = removed.shape
    flat = removed.reshape(-1)
    rows = np.flatnonzero(flat)
    n = len(rows)
    if n == 0:
        return np.zeros((image.shape[0], 0))
    if n == flat.size:
        raise ValueError("Expected at least one kept pixel for the linear imputation, but every pixel is removed.")
    unknown = np.full(flat.size, -1, dtype=np.int64)
    unknown[rows] = np.arange(n)
    pixels = image.reshape(image.shape[0], -1)
    y, x = np.divmod(rows, width)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, image.shape[0]))
    coupled_i, coupled_j, coupled_w = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        diagonal[inside] += weight  # sum of the in-image neighbours' weights
        eq, neighbour = np.flatnonzero(inside), (ny * width + nx)[inside]
        var = unknown[neighbour]
        coupled_i.append(eq[var >= 0])
        coupled_j.append(var[var >= 0])
        coupled_w.append(np.full(int((var >= 0).sum()), -weight))
        np.add.at(rhs, eq[var < 0], weight * pixels[:, neighbour[var < 0]].T)
    i = np.concatenate([np.arange(n), *coupled_i])
    j = np.concatenate([np.arange(n), *coupled_j])
    matrix = sparse.csc_matrix((np.concatenate([diagonal, *coupled_w]), (i, j)), shape=(n, n))
    return splu(matrix).solve(rhs).T


def _noise_scale(noise: float, std: Union[float, Sequence[float]], channels: int) -> Optional[Tensor]:
    """``(C, 1)`` float64 noise std of each channel in the images' units, or None without noise."""
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"Expected `noise` to be a finite number >= 0, but got {noise!r}.")
    if noise == 0:
        return None
    stds = channel_values(std, "std", positive=True)
    stds = stds * channels if len(stds) == 1 else channel_values(stds, "std", channels, positive=True)
    return noise / torch.tensor(stds, dtype=torch.float64)[:, None]


def _generator(seed: int, key: int) -> torch.Generator:
    """The sample's CPU generator, seeded as the stochastic explainers' (``seed * 1_000_003 + index``)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(key))


def _impute_one(image: Tensor, removed: Tensor, scale: Optional[Tensor], generator: Optional[torch.Generator]
                ) -> Tensor:
    """``image`` ``(C, H, W)`` with the ``removed`` pixels filled (and ``scale * N(0, 1)`` added)."""
    channels = image.shape[0]
    where = removed.reshape(-1).cpu()
    out = image.detach().double().cpu().reshape(channels, -1).clone()
    fill = torch.from_numpy(_linear_fill(out.view(channels, *removed.shape).numpy(), removed.cpu().numpy()))
    if scale is not None:
        field = torch.randn(image.shape, generator=generator, dtype=torch.float32).reshape(channels, -1)
        fill = fill + scale * field[:, where].double()
    out[:, where] = fill
    return out.view(image.shape).to(image.device, image.dtype)


def noisy_linear_impute(images: Tensor, removed: Tensor, noise: float = 0.01,
                        std: Union[float, Sequence[float]] = IMAGENET_STD, indices: Optional[Tensor] = None,
                        seed: int = 0) -> Tensor:
    """Noisy linear imputation (Rong et al., ICML 2022): removed pixels := 8-neighbour weighted mean + noise.

    Per image and channel, solves ``x_i = sum_{j in N(i)} w_ij x_j / sum_{j in N(i)} w_ij`` for the removed
    pixels ``i`` (kept pixels fixed; ``w = 1/6`` direct, ``1/12`` diagonal, in-image neighbours only), then
    adds ``N(0, (noise / std_c)^2)`` to them (see the module docstring).

    Args:
        images: ``(B, C, H, W)`` images (the model's normalised inputs).
        removed: ``(B, H, W)`` bool, True where a pixel is removed; each image must keep one pixel.
        noise: noise std in pixel units (paper: 0.01 on ``[0, 1]`` images); 0 for none.
        std: the images' per-channel normalisation std (or one value); only used with noise.
        indices: ``(B,)`` dataset indices seeding each image's noise; default the batch positions.
        seed: the noise seed.

    Returns:
        ``(B, C, H, W)`` imputed images, dtype and device of ``images``.

    Examples:
        >>> image = torch.zeros(1, 1, 3, 3)
        >>> image[0, 0, 2, 2] = 1.0
        >>> removed = torch.zeros(1, 3, 3, dtype=torch.bool)
        >>> removed[0, 1, 1] = True  # the centre: the weighted mean of its 8 neighbours, 1/12
        >>> noisy_linear_impute(image, removed, noise=0.0)[0, 0]
        tensor([[0.0000, 0.0000, 0.0000],
                [0.0000, 0.0833, 0.0000],
                [0.0000, 0.0000, 1.0000]])
    """
    if not isinstance(removed, Tensor) or removed.dtype != torch.bool or \
            removed.shape != (images.shape[0], *images.shape[2:]):
        got = tuple(removed.shape) if isinstance(removed, Tensor) else type(removed).__name__
        raise ValueError(f"Expected `removed` to be a bool tensor of shape {(images.shape[0], *images.shape[2:])}, "
                         f"but got {got}.")
    scale = _noise_scale(noise, std, images.shape[1])
    keys = range(len(images)) if indices is None else torch.as_tensor(indices).reshape(-1).tolist()
    return torch.stack([_impute_one(image, mask, scale, _generator(seed, key) if scale is not None else None)
                        for image, mask, key in zip(images, removed, keys)])


def removal_masks(saliency: Tensor, percentiles: Sequence[float] = PERCENTILES, order: str = "morf",
                  removal: str = "rank") -> Tensor:
    """``(B, P, H, W)`` bool: the pixels removed at each percentage (see the module docstring).

    ``removal="rank"`` (the paper): the ``floor(q HW / 100)`` most (MoRF) or least (LeRF) relevant pixels
    of the stable descending order; ``"threshold"``: pytorch-grad-cam's masks (``saliency >=
    np.percentile(saliency, 100 - q)``, on ``1 - saliency`` for LeRF).

    Examples:
        >>> saliency = torch.tensor([[[0.1, 0.9], [0.5, 0.5]]])
        >>> removal_masks(saliency, [25, 50], "morf").int().tolist()
        [[[[0, 1], [0, 0]], [[0, 1], [1, 0]]]]
        >>> removal_masks(saliency, [25, 50], "lerf").int().tolist()
        [[[[1, 0], [0, 0]], [[1, 0], [0, 1]]]]
    """
    percentiles = _check_percentiles(percentiles)
    check_choice(order, "order", ORDERS)
    check_choice(removal, "removal", REMOVALS)
    batch, height, width = saliency.shape
    area = height * width
    flat = saliency.detach().flatten(1).cpu()
    if removal == "threshold":
        scores = (flat if order == "morf" else 1 - flat).numpy()
        masks = [~torch.from_numpy(scores < np.percentile(scores, 100 - q, axis=1, keepdims=True))
                 for q in percentiles]
        return torch.stack(masks, dim=1).view(batch, len(percentiles), height, width)
    rank = torch.empty(batch, area, dtype=torch.int64)
    rank.scatter_(1, torch.argsort(flat, dim=1, descending=True, stable=True), torch.arange(area).expand(batch, -1))
    counts = [math.floor(round(q * area / 100, 9)) for q in percentiles]
    masks = [rank < k if order == "morf" else rank >= area - k for k in counts]
    return torch.stack(masks, dim=1).view(batch, len(percentiles), height, width)


def road_curve(model: Model, images: Tensor, saliency: Tensor, targets: Tensor, order: str = "morf",
               percentiles: Sequence[float] = PERCENTILES, noise: float = 0.01,
               std: Union[float, Sequence[float]] = IMAGENET_STD, indices: Optional[Tensor] = None, seed: int = 0,
               removal: str = "rank", chunk_size: int = 64) -> Tensor:
    """ROAD curve (Rong et al., ICML 2022): the class probability on each noisy linear imputation.

    ``curve[b, p] = softmax(model(impute(x_b, removal_masks(...)[b, p])))_{targets[b]}``.

    Args:
        model: classifier returning logits (run in eval mode and restored).
        images: ``(B, C, H, W)`` model inputs.
        saliency: ``(B, H, W)`` maps in ``[0, 1]``; a map with NaN gives a NaN curve.
        targets: ``(B,)`` explained classes.
        order: ``"morf"`` (most relevant removed first) or ``"lerf"`` (least relevant first).
        percentiles: percentages ``q`` of pixels removed, in ``(0, 100)``.
        noise, std: the imputation noise in pixel units and the inputs' normalisation std.
        indices: ``(B,)`` dataset indices seeding each sample's noise; default the batch positions.
        seed: the noise seed.
        removal: ``"rank"`` (the paper) or ``"threshold"`` (pytorch-grad-cam's masks).
        chunk_size: imputed images per forward.

    Returns:
        ``(B, P)`` float64 probabilities, on the images' device.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> images = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]])
        >>> saliency = torch.tensor([[[1.0, 0.0], [0.5, 0.2]]])
        >>> road_curve(model, images, saliency, torch.tensor([0]), "morf", [25, 50, 75], noise=0.0)
        tensor([[0.5000, 0.5000, 0.5000]], dtype=torch.float64)
        >>> road_curve(model, images, saliency, torch.tensor([0]), "lerf", [25, 50, 75], noise=0.0)
        tensor([[0.9963, 0.9997, 1.0000]], dtype=torch.float64)
    """
    _check_inputs(images, saliency, targets)
    check_positive_int(chunk_size, "chunk_size")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected `seed` to be an int >= 0, but got {seed!r}.")
    masks = removal_masks(saliency, percentiles, order, removal)
    scale = _noise_scale(noise, std, images.shape[1])
    keys = list(range(len(images))) if indices is None else torch.as_tensor(indices).reshape(-1).tolist()
    if len(keys) != len(images):
        raise ValueError(f"Expected `indices` to have shape ({len(images)},), but got {len(keys)} values.")
    n_points = masks.shape[1]
    curves = torch.full((len(images), n_points), torch.nan, dtype=torch.float64, device=images.device)
    valid = (~torch.isnan(saliency.flatten(1)).any(dim=1)).nonzero().flatten().tolist()
    # a threshold mask removing every pixel has no imputation: its point stays NaN
    pairs = [(b, p) for b in valid for p in range(n_points)]
    generators = {b: _generator(seed, keys[b]) for b in valid} if scale is not None else {}
    with eval_mode(model), torch.inference_mode():
        for first in range(0, len(pairs), chunk_size):
            chunk = pairs[first:first + chunk_size]
            imputed, done = [], []
            for b, p in chunk:
                generator = generators.get(b)
                if bool(masks[b, p].all()):
                    if generator is not None:  # keep the next fields of this sample where they are
                        torch.randn(images.shape[1:], generator=generator)
                    continue
                imputed.append(_impute_one(images[b], masks[b, p], scale, generator))
                done.append((b, p))
            if not done:
                continue
            logits = model(torch.stack(imputed))
            if logits.ndim != 2 or len(logits) != len(done):
                raise ValueError(f"Expected the model to return logits of shape ({len(done)}, K), but got "
                                 f"{tuple(logits.shape)}.")
            if (targets >= logits.shape[1]).any():
                raise ValueError(f"Expected `targets` in [0, {logits.shape[1]}) for a model with {logits.shape[1]} "
                                 f"classes, but got {targets.tolist()}.")
            rows = torch.tensor(done, device=images.device)
            probs = logits.double().softmax(dim=1).gather(1, targets.to(logits.device)[rows[:, 0]].long()[:, None])
            curves[rows[:, 0], rows[:, 1]] = probs.squeeze(1).to(curves.device)
    return curves


def road_morf(model: Model, images: Tensor, saliency: Tensor, targets: Tensor, reduction: str = "mean",
              nan_policy: str = "omit", **kwargs) -> Tensor:
    """ROAD MoRF (Rong et al., ICML 2022): mean over percentages of the MoRF curve, in ``[0, 1]``; lower is better.

    ``MoRF = (1 / P) sum_q softmax(f(impute(x, top q % pixels)))_c``; keyword arguments as :func:`road_curve`.

    Args:
        reduction: ``"mean"`` (batch mean) or ``"none"`` (``(B,)``).
        nan_policy: for NaN maps: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> road_morf(model, torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]]), torch.tensor([[[1.0, 0.0], [0.5, 0.2]]]),
        ...           torch.tensor([0]), percentiles=[25, 50, 75], noise=0.0)
        tensor(0.5000, dtype=torch.float64)
    """
    curves = road_curve(model, images, saliency, targets, "morf", **kwargs)
    return reduce_values(curves.mean(dim=1), reduction, nan_policy)


def road_lerf(model: Model, images: Tensor, saliency: Tensor, targets: Tensor, reduction: str = "mean",
              nan_policy: str = "omit", **kwargs) -> Tensor:
    """ROAD LeRF (Rong et al., ICML 2022): mean over percentages of the LeRF curve, in ``[0, 1]``; higher is better.

    ``LeRF = (1 / P) sum_q softmax(f(impute(x, bottom q % pixels)))_c``; arguments as :func:`road_morf`.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> road_lerf(model, torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]]), torch.tensor([[[1.0, 0.0], [0.5, 0.2]]]),
        ...           torch.tensor([0]), percentiles=[25, 50, 75], noise=0.0)
        tensor(0.9987, dtype=torch.float64)
    """
    curves = road_curve(model, images, saliency, targets, "lerf", **kwargs)
    return reduce_values(curves.mean(dim=1), reduction, nan_policy)
