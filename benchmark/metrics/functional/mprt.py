"""Model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, Sec. 3.1).

A method whose map survives the destruction of the model's parameters does not explain the model (Adebayo's
edge detector, Guided Backprop). The test re-initialises the model's layer groups from the top (the logits)
down and compares, per layer, the map of the randomized model with the original one:

* **cascading** (the paper's main test): the ``k``-th copy has the ``k`` top groups randomized, cumulatively;
* **independent**: the ``k``-th copy has only the ``k``-th group from the top randomized.

Layer groups (:func:`layer_groups`): the model's modules in forward order (first call of a traced forward),
opening the pure containers (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict`` and their subclasses) and
keeping every other module that holds parameters whole (a ResNet ``BasicBlock``, an Inception ``Mixed_5b``, a
``Conv2d``, a ``Linear``); a normalisation layer (batch/instance/group/layer norm) joins the group before it,
as TF-slim's ``conv2d`` scopes hold their batch norm. On torchvision's Inception v3 this gives the paper's 17
blocks (``Conv2d_1a_3x3`` ... ``Mixed_7c``, ``fc``). Parameters registered on the model itself (a ViT's class
token) are not randomized; ``layers=`` overrides the groups with module names.

Re-initialisation (:class:`RandomizedModel`): each group's modules call their own ``reset_parameters()`` (a
parameter-holding module without one: a normal draw with that parameter's mean and standard deviation) on a CPU
copy under the CPU generator seeded by ``(seed, group)``, so the weights follow each layer type's own default
init (Kaiming-uniform convolutions, unit batch norms with reset running statistics) -- the scale a freshly built
network has, so the explainer's gradients neither vanish nor explode -- as Quantus does for PyTorch, identically
on every device, without touching the global random state.

Similarity of a map ``s`` and the randomized model's map ``r`` (both ``(H, W)``):

* Spearman rank correlation (:func:`rank_correlation`) ``rho = Pearson(rank(a), rank(b))`` with average ranks
  (scipy's ``spearmanr``), of ``|s|, |r|`` ("absolute") and of ``s, r`` ("signed"); on the benchmark's ``[0, 1]``
  maps both are equal. Identical maps score 1; otherwise a constant map (a randomized Grad-CAM that is all zero
  after its ReLU) scores 0 -- scipy would give NaN -- as it keeps none of the original ranking.
* SSIM (:func:`ssim`, Wang et al., IEEE TIP 2004): the mean over the valid positions of
  ``((2 mu_s mu_r + C1)(2 cov_sr + C2)) / ((mu_s^2 + mu_r^2 + C1)(var_s + var_r + C2))``, local statistics under
  the 11 x 11 Gaussian window of standard deviation 1.5, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = 1``.

A NaN map (original or randomized) gives NaN at its layers (undefined).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Set, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark._utils import check_choice, eval_mode
from benchmark.metrics.functional._common import check_same_batch, reduce_values
from benchmark.metrics.functional.occlusion_correlation import spearman_correlation

__all__ = ["RANDOMIZATIONS", "RandomizedModel", "layer_groups", "mprt_similarity", "rank_correlation", "ssim"]

RANDOMIZATIONS = ("cascading", "independent")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
LayerSpec = Union[str, Sequence[str]]


def rank_correlation(a: Tensor, b: Tensor, absolute: bool = True) -> Tensor:
    """Spearman's rho per row of ``(B, ...)`` maps (of ``|a|, |b|`` when ``absolute``), float64.

    Identical rows score 1, a constant row against a different one 0, a row holding NaN NaN.

    Examples:
        >>> a = torch.tensor([[0.0, 0.2, 0.6, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
        >>> b = torch.tensor([[0.1, 0.5, 0.5, 0.9], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
        >>> rank_correlation(a, b)  # ranks 1, 2, 3, 4 against 1, 2.5, 2.5, 4
        tensor([0.9487, 1.0000, 0.0000], dtype=torch.float64)
        >>> rank_correlation(torch.tensor([[-2.0, 1.0, 3.0]]), torch.tensor([[2.0, 1.0, 3.0]]), absolute=False)
        tensor([0.5000], dtype=torch.float64)
    """
    a, b = a.flatten(1).double(), b.flatten(1).double()
    if absolute:
        a, b = a.abs(), b.abs()
    rho = spearman_correlation(a, b)
    undefined = torch.isnan(a).any(dim=1) | torch.isnan(b).any(dim=1)
    rho = torch.where(torch.isnan(rho) & ~undefined, 0.0, rho)  # a constant row: no ranking kept
    return torch.where((a == b).all(dim=1) & ~undefined, 1.0, rho)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03) -> Tensor:
    """Mean SSIM per pair of ``(B, H, W)`` maps (Wang et al., IEEE TIP 2004), float64.

    Local means, variances and covariance under a ``win_size`` x ``win_size`` Gaussian window (``sigma``), over
    the positions where the window lies inside the map -- what ``skimage.metrics.structural_similarity(a, b,
    gaussian_weights=True, use_sample_covariance=False, data_range=1)`` averages after cropping its padded border.

    Raises:
        ValueError: a map smaller than the window.

    Examples:
        >>> a = torch.zeros(1, 11, 11)
        >>> ssim(a, a), ssim(a, a + 0.5)  # constants: (C1) / (0.25 + C1), C1 = 1e-4
        (tensor([1.], dtype=torch.float64), tensor([0.0004], dtype=torch.float64))
    """
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"Expected two (B, H, W) maps of one shape, but got {tuple(a.shape)} and {tuple(b.shape)}.")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"Expected maps of at least {win_size} x {win_size} for SSIM's window, but got "
                         f"{tuple(a.shape[-2:])}.")
    a, b = a.double().unsqueeze(1), b.double().unsqueeze(1)
    g = _gaussian_window(win_size, sigma, a.dtype, a.device)

    def blur(x: Tensor) -> Tensor:  # separable Gaussian, "valid" positions only
        return F.conv2d(F.conv2d(x, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)


def mprt_similarity(saliency: Tensor, randomized: Tensor, reduction: str = "mean", nan_policy: str = "omit") -> Tensor:
    """Similarities of each original map to its randomized models' maps: ``(B, 3, L)`` rows of Spearman of
    ``|maps|``, signed Spearman and SSIM per layer (lower = more dependent on the parameters).

    Args:
        saliency: ``(B, H, W)`` maps of the original model, in ``[0, 1]`` (SSIM's ``L = 1``).
        randomized: ``(B, L, H, W)`` maps of the same classes by the ``L`` randomized models.
        reduction: ``"none"`` (``(B, 3, L)``, float64) or ``"mean"`` (``(3, L)``: the mean over samples).
        nan_policy: NaN maps: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Examples:
        >>> s = torch.linspace(0, 1, 144).view(1, 12, 12)
        >>> r = torch.stack([s, 1 - s], dim=1)  # layer 1: unchanged; layer 2: inverted
        >>> mprt_similarity(s, r)
        tensor([[ 1.0000, -1.0000],
                [ 1.0000, -1.0000],
                [ 1.0000, -0.9317]], dtype=torch.float64)
    """
    if not isinstance(saliency, Tensor) or not isinstance(randomized, Tensor):
        raise TypeError("Expected `saliency` and `randomized` to be torch.Tensors.")
    if saliency.ndim != 3 or randomized.ndim != 4 or randomized.shape[-2:] != saliency.shape[-2:]:
        raise ValueError(f"Expected `saliency` (B, H, W) and `randomized` (B, L, H, W), but got "
                         f"{tuple(saliency.shape)} and {tuple(randomized.shape)}.")
    check_same_batch(saliency=saliency, randomized=randomized)
    batch, layers = randomized.shape[:2]
    original = saliency.to(randomized.device).unsqueeze(1).expand_as(randomized).reshape(batch * layers, -1)
    other = randomized.reshape(batch * layers, -1)
    maps = (original.view(-1, *saliency.shape[-2:]), other.view(-1, *saliency.shape[-2:]))
    absolute = rank_correlation(original, other, True)
    # non-negative maps (every post-ReLU CAM): |x| = x, so the signed correlation is the same number
    nonnegative = not ((original < 0).any() or (other < 0).any())
    signed = absolute if nonnegative else rank_correlation(original, other, False)
    values = torch.stack([absolute, signed, ssim(*maps)], dim=1).view(batch, layers, 3).transpose(1, 2)
    bad = torch.isnan(original).any(dim=1) | torch.isnan(other).any(dim=1)
    values = values.masked_fill(bad.view(batch, 1, layers), float("nan"))
    return reduce_values(values, reduction, nan_policy)


def layer_groups(model: nn.Module, example: Tensor, layers: Optional[Sequence[LayerSpec]] = None) -> List[List[str]]:
    """The model's layer groups in forward order, each a list of module names (see the module docstring).

    Args:
        model: the classifier (left unchanged: eval mode, hooks removed afterwards).
        example: a ``(B, C, H, W)`` input traced once to find the forward order.
        layers: override: module names (or lists of names, one group each), in forward order.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
        >>> layer_groups(net, torch.zeros(1, 1, 4, 4))
        [['0', '1'], ['4']]
    """
    if layers is not None:
        groups = [[spec] if isinstance(spec, str) else list(spec) for spec in layers]
        for name in (n for group in groups for n in group):
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"Expected `layers` to name modules of the model, but {name!r} is not one.") from None
        if not groups or not all(groups):
            raise ValueError(f"Expected `layers` to hold at least one module name per group, but got {layers!r}.")
        return groups
    candidates = dict(_candidates(model, ""))
    order: List[str] = []
    handles = [module.register_forward_pre_hook(lambda m, args, name=name: order.append(name))
               for name, module in candidates.items()]
    try:
        with eval_mode(model), torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    groups = []
    for name in dict.fromkeys(order):  # first call, skipping modules that never run (an auxiliary head)
        if isinstance(candidates[name], _NORMS) and groups:
            groups[-1].append(name)
        else:
            groups.append([name])
    if not groups:
        raise ValueError(f"Expected {type(model).__name__} to call modules with parameters, but found none.")
    return groups


def _candidates(module: nn.Module, prefix: str):
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, _CONTAINERS):
            yield from _candidates(child, f"{full}.")
        elif next(child.parameters(), None) is not None:
            yield full, child


class RandomizedModel:
    """One copy of ``model`` whose layer groups are switched between the original and seeded random weights.

    Built once: the copy (:attr:`model`) and one random draw per group (:func:`layer_groups`, re-initialised as
    the module docstring says), two models' worth of memory whatever the number of groups ``L``.
    :meth:`select` loads the ``k``-th randomized model into the copy (``k = 0``: the top group) by copying only the
    groups whose state changes; ``model`` itself is never modified.

    Args:
        model: the trained classifier.
        example: an input traced once for the forward order.
        layers: override of the groups (module names, in forward order).
        seed: the draws' seed (group ``g`` in forward order: ``seed * 1_000_003 + g``).

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        >>> randomized = RandomizedModel(net, torch.zeros(1, 2))
        >>> randomized.names
        ['2', '0']
        >>> copy_ = randomized.select(0, "cascading")  # the top layer randomized
        >>> torch.equal(copy_[0].weight, net[0].weight), torch.equal(copy_[2].weight, net[2].weight)
        (True, False)
    """

    def __init__(self, model: nn.Module, example: Tensor, layers: Optional[Sequence[LayerSpec]] = None,
                 seed: int = 0) -> None:
        with torch.inference_mode(False), torch.no_grad():  # normal tensors even when built in predict
            self.model = copy.deepcopy(model)
            self.groups = layer_groups(self.model, example, layers)
            tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
            originals = {**dict(model.named_parameters()), **dict(model.named_buffers())}
            self._original: List[Dict[str, Tensor]] = []
            self._random: List[Dict[str, Tensor]] = []
            self._tensors: List[Dict[str, Tensor]] = []
            for g, group in enumerate(self.groups):
                names = [f"{m}.{n}" for m in group for n, _ in self.model.get_submodule(m).named_parameters()]
                names += [f"{m}.{n}" for m in group for n, _ in self.model.get_submodule(m).named_buffers()]
                names = [n for n in dict.fromkeys(names) if n in tensors]  # tied tensors once
                self._tensors.append({n: tensors[n] for n in names})
                self._original.append({n: originals[n] for n in names})
                self._random.append(_random_group(self.model, group, self._tensors[-1], seed * 1_000_003 + g))
        self._randomized: Set[int] = set()

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def names(self) -> List[str]:
        """Each group's name, top group first (the order of :meth:`select`): its modules' common parent (a
        ``conv``-``bn`` block ``features.0``), else the ``+``-joined module names (``conv1+bn1``)."""
        return [_group_name(group) for group in reversed(self.groups)]

    def randomized_groups(self, k: int, randomization: str = "cascading") -> Set[int]:
        """Forward-order indices of the groups randomized in the ``k``-th model (``k = 0``: the top group)."""
        check_choice(randomization, "randomization", RANDOMIZATIONS)
        if not 0 <= k < len(self):
            raise ValueError(f"Expected `k` in [0, {len(self) - 1}], but got {k}.")
        top = len(self) - 1
        return set(range(top - k, top + 1)) if randomization == "cascading" else {top - k}

    def select(self, k: int, randomization: str = "cascading") -> nn.Module:
        """The copy with the ``k``-th randomized model's weights (see :meth:`randomized_groups`)."""
        wanted = self.randomized_groups(k, randomization)
        with torch.inference_mode(False), torch.no_grad():
            for g in wanted.symmetric_difference(self._randomized):
                source = self._random[g] if g in wanted else self._original[g]
                for name, tensor in self._tensors[g].items():
                    tensor.copy_(source[name])
        self._randomized = wanted
        return self.model


def _group_name(group: Sequence[str]) -> str:
    parents = {name.rpartition(".")[0] for name in group}
    return parents.pop() if len(group) > 1 and len(parents) == 1 and "" not in parents else "+".join(group)


def _random_group(model: nn.Module, group: Sequence[str], tensors: Dict[str, Tensor], seed: int) -> Dict[str, Tensor]:
    """Seeded re-initialisation of ``group``'s ``tensors`` on a CPU copy; returns them on their device."""
    holder = nn.ModuleDict({str(i): copy.deepcopy(model.get_submodule(m)).cpu() for i, m in enumerate(group)})
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's is left alone
        for module in holder.modules():
            reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
            if callable(reset):
                reset()
            elif module is not holder:
                for param in module.parameters(recurse=False):
                    std = float(param.std()) if param.numel() > 1 else 0.0
                    param.normal_(float(param.mean()), std if std > 0 else 0.02)
    out: Dict[str, Tensor] = {}
    for i, m in enumerate(group):
        part = holder[str(i)]
        for name, value in [*part.named_parameters(), *part.named_buffers()]:
            full = f"{m}.{name}"
            if full in tensors and full not in out:
                out[full] = value.detach().to(tensors[full].device, tensors[full].dtype).clone()
    return out
