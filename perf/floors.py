"""The forward/backward floor of every explainer and metric: what the protocol must compute.

A :class:`Cost` is a list of ``(count per image, unit, batch size)`` terms. The units are timed
on the backbone in the same run as the methods (:mod:`perf.harness`):

* ``forward``: the plain batched forward under ``torch.inference_mode``, per image;
* ``copy``: the same forward on the batch-norm-folded, channels-last
  :class:`~benchmark.explainers.fastpath.InferenceCopy` that our masked and perturbed forwards run on (Score-CAM,
  SS-CAM, IS-CAM, RISE, deletion, insertion, ROAD), so that a floor is not beaten by the copy alone;
* ``grad``: one forward plus the backward from the target logits to the target layer
  (``torch.autograd.grad``, no parameter gradients), per image: what a gradient CAM needs;
* ``tail``: the layers after the target layer only, per image (Ablation-CAM's ablated forwards);
* ``tailgrad``: forward + backward through the layers after the target layer only (from the target logits to the
  layer's output), per image: what a Hessian-vector product adds to a gradient CAM's pass (Shapley-CAM; the
  double backward runs the tail's derivative forward and back once more, Pearlmutter 1994); timed on the math
  attention kernel, the one a double backward can run on (no difference on a CNN); where the model cannot be split
  at the layer it is timed as ``grad`` (an upper bound, on the default kernels) and the floor column says G;
* ``input``: one forward plus the backward from the target logits to the *input* (no parameter
  gradients), per image: one gradient of the pixel-attribution methods (guided backprop, IG, SHAP);
* ``explainer``: one call of the explainer itself, per image (a metric that re-runs it, e.g.
  Coherency on ``x * CAM``, or the maps of extra top-k classes);
* ``sort`` and ``scan``: forward-free work, per map: one sort of a map's pixels (what a sweep over every threshold
  of MaxBoxAcc needs at least) and one reduction over them (what any metric of the map alone reads). In
  forward-equivalents they are ``floor ms / forward ms``.

floor = sum(count x unit time); efficiency = floor / measured (1 = nothing but the protocol's own
passes; above 1 = fewer or cheaper passes than the protocol, e.g. Score-CAM skipping constant
channels or running on the batch-norm-folded inference copy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

__all__ = ["Cost", "FORWARD_FREE_UNITS", "GRADIENT_CAMS", "explainer_cost", "metric_cost"]

#: methods that cost one forward + one backward to the target layer
GRADIENT_CAMS = ("eigengradcam", "finercam", "gradcam", "gradcampp", "hirescam", "layercam", "xgradcam")
#: the units of work that runs no network (a floor made only of them is a forward-free metric's)
FORWARD_FREE_UNITS = frozenset({"sort", "scan"})
#: methods whose map needs no forward pass beyond the one every batch already runs
FREE_EXPLAINERS = ("center", "fakecam", "random")  # random: its grid is learnt once per input size (setup)


@dataclass(frozen=True)
class Cost:
    """Passes per image: ``terms`` = ``((count, unit, batch size), ...)``.

    Examples:
        >>> cost = Cost(((1, "forward", 8), (512, "forward", 32)))
        >>> cost.describe()
        '1 F(8) + 512 F(32)'
        >>> cost.seconds({("forward", 8): 0.02, ("forward", 32): 0.01})
        5.14
    """

    terms: Tuple[Tuple[float, str, int], ...] = ()

    def describe(self) -> str:
        """The terms as text: F = forward, C = forward on the inference copy, G = forward + backward to the layer,
        T = tail, H = forward + backward through the tail, I = forward + backward to the input, E = explainer, S = sort
        of a map, R = reduction over a map."""
        letters = {"forward": "F", "copy": "C", "grad": "G", "tail": "T", "tailgrad": "H", "input": "I",
                   "explainer": "E", "sort": "S", "scan": "R"}
        return " + ".join(f"{count:g} {letters[unit]}({batch})" for count, unit, batch in self.terms) or "0"

    def units(self) -> Tuple[Tuple[str, int], ...]:
        """The ``(unit, batch size)`` pairs that must be timed."""
        return tuple((unit, batch) for _, unit, batch in self.terms)

    def seconds(self, unit_seconds: Dict[Tuple[str, int], float]) -> float:
        """Floor in seconds per image from the measured seconds per image of each unit."""
        return round(sum(count * unit_seconds[(unit, batch)] for count, unit, batch in self.terms), 12)


def explainer_cost(name: str, batch: int, channels: int, explainer: object, size: Tuple[int, int] = (224, 224)) -> Cost:
    """The passes explainer ``name`` needs per image at batch size ``batch``.

    ``channels`` is the target layer's channel count; ``explainer`` the instance (its ``chunk_size``,
    ``n_samples``, ``steps`` and occlusion geometry are read); ``size`` the image's (H, W).

    Examples:
        >>> class Score: chunk_size = 32
        >>> explainer_cost("scorecam", 4, 512, Score()).describe()
        '1 F(4) + 512 C(32)'
        >>> explainer_cost("gradcam", 4, 512, None).describe()
        '1 G(4)'
    """
    if name in GRADIENT_CAMS:
        return Cost(((1, "grad", batch),))
    if name in FREE_EXPLAINERS:
        return Cost()
    chunk = getattr(explainer, "chunk_size", batch)
    special: Dict[str, Callable[[], Cost]] = {
        "scorecam": lambda: Cost(((1, "forward", batch), (channels, "copy", chunk))),
        "ablationcam": lambda: Cost(((1, "forward", batch), (channels, "tail", chunk))),
        # N noisy masks per channel; IS-CAM: one per positive path coefficient (N - 1 for the paper's, N for
        # torch-cam's)
        "sscam": lambda: Cost(((1, "forward", batch), (explainer.n_samples * channels, "copy", chunk))),
        "iscam": lambda: Cost(((1, "forward", batch), (_positive_coefficients(explainer) * channels, "copy",
                                                       chunk))),
        "smoothgradcampp": lambda: Cost(((1, "forward", batch), (explainer.n_samples, "grad", batch))),
        # one forward + backward to the layer, then the Hessian-vector product: the double backward goes through
        # the layers after the target once more, forward and back (H; measured on VGG-16 at batch 1, where the
        # 120 M-parameter head makes it visible: Shapley-CAM = G + H within 1 %, G + T undercounted it by 12 %)
        "shapleycam": lambda: Cost(((1, "grad", batch), (1, "tailgrad", batch))),
        "eigencam": lambda: Cost(((1, "forward", batch),)),
        "kpcacam": lambda: Cost(((1, "forward", batch),)),  # + an (hw x hw) eigendecomposition, not counted
        "attentionrollout": lambda: Cost(((1, "forward", batch),)),  # one forward reading every block's attention
        # one forward + backward to the first block's attention: about a backward to the input
        "chefer2021": lambda: Cost(((1, "input", batch),)),
        "fullgrad": lambda: Cost(((1, "input", batch),)),  # one forward + backward to the input
        "guidedbackprop": lambda: Cost(((1, "input", batch),)),
        "guidedgradcam": lambda: Cost(((1, "grad", batch), (1, "input", batch))),
        "guidedgradcampp": lambda: Cost(((1, "grad", batch), (1, "input", batch))),
        "integratedgradients": lambda: Cost(((explainer.steps, "input", min(chunk, explainer.steps * batch)),)),
        "gradientshap": lambda: Cost(((explainer.n_samples, "input", explainer.n_samples),)),
        # the clean score, then one forward per patch position (captum batches chunk_size // batch per image)
        # the class check's forward, then n_masks masked forwards per image in chunks of chunk_size
        "rise": lambda: Cost(((1, "forward", batch), (explainer.n_masks, "copy", chunk))),
        "occlusion": lambda: _occlusion_cost(explainer.patch_size, explainer.stride, chunk, batch, size),
    }
    if name not in special:
        raise KeyError(f"No floor is defined for explainer {name!r}; add it to perf/floors.py.")
    return special[name]()


def _positive_coefficients(explainer: object) -> int:
    """IS-CAM's masked forwards per channel: one per positive coefficient of its path (the paper's first is 0: a
    constant, no forward)."""
    from benchmark.explainers.iscam import integration_coefficients

    return int((integration_coefficients(explainer.n_samples, explainer.schedule) > 0).sum())


def _occlusion_cost(patch_size: int, stride: int, chunk_size: int, batch: int, size: Tuple[int, int]) -> Cost:
    """The clean score, then one forward per patch position; captum evaluates ``chunk_size // batch`` positions of
    every image per forward (at most all of them)."""
    from benchmark.explainers.occlusion import occlusion_positions

    positions = occlusion_positions(*size, patch_size, stride)
    per_eval = min(max(1, chunk_size // batch), positions)
    return Cost(((1, "forward", batch), (positions, "forward", batch * per_eval)))


def metric_cost(name: str, batch: int, metric: object, size: Tuple[int, int], top_k: int = 2,
                num_classes: int = 1000) -> Cost:
    """The passes metric ``name`` adds per image to the target class's map at batch size ``batch``.

    ``metric`` is the instance (its ``steps``/``pixels_per_step``/``chunk_size`` are read),
    ``size`` the image's (H, W), ``top_k`` the module's number of top classes (localization,
    pointing recall; the target's own map is reused, so ``top_k - 1`` extra maps when the target
    is among them), ``num_classes`` the model's (contrastivity over every other class). One-pixel
    sensitivity counts its budget's upper bound, ``popsize * (maxiter + 1)`` forwards, for every image
    (the attack stops at the first successful generation, and only the first ``n_images`` are attacked).

    Examples:
        >>> class Curve: steps, pixels_per_step, chunk_size = None, None, 64
        >>> metric_cost("deletion", 4, Curve(), (224, 224)).describe()
        '224 C(64)'
        >>> metric_cost("adcc", 4, None, (224, 224)).describe()
        '1 E(4)'
    """
    height, width = size
    table: Dict[str, Callable[[], Cost]] = {
        "average_drop": lambda: Cost(((1, "forward", batch),)),
        "average_increase": lambda: Cost(((1, "forward", batch),)),
        "coherency": lambda: Cost(((1, "explainer", batch),)),
        "complexity": lambda: Cost(((1, "scan", batch),)),
        # the explainer's call on x * CAM makes the forward that gives the drop its probability (for a method
        # whose call makes one: the harness's Grad-CAM; the run's pass model adds one otherwise)
        "adcc": lambda: Cost(((1, "explainer", batch),)),
        "deletion": lambda: _curve_cost(metric, height, width),
        "insertion": lambda: _curve_cost(metric, height, width),
        "localization_error": lambda: Cost(((top_k - 1, "explainer", batch),)),
        "pointing_game_recall": lambda: Cost(((top_k - 1, "explainer", batch),)),
        "max_box_acc": lambda: Cost(((1, "sort", batch),)),
        "max_box_acc_v2": lambda: Cost(((1, "sort", batch),)),
        "pxap": lambda: Cost(((1, "scan", batch),)),
        # one forward per percentage (the sparse solves of the imputation are CPU work, not counted)
        "road_morf": lambda: Cost(((len(metric.percentiles), _copy_or_model(metric), metric.chunk_size),)),
        "road_lerf": lambda: Cost(((len(metric.percentiles), _copy_or_model(metric), metric.chunk_size),)),
        # one forward per perturbation (f(x) is recomputed beside them: not counted), each sample apart
        "infidelity_square": lambda: Cost(((metric.n_perturb_samples, "forward",
                                            min(metric.n_perturb_samples + 1, metric.chunk_size)),)),
        "infidelity_gaussian": lambda: Cost(((metric.n_perturb_samples, "forward",
                                              min(metric.n_perturb_samples + 1, metric.chunk_size)),)),
        "max_sensitivity": lambda: Cost(((metric.n_perturb_samples, "explainer",
                                          min(metric.n_perturb_samples, metric.chunk_size)),)),
        # one explainer call per layer group on its randomized model (L unknown before a model is seen: 1)
        "mprt": lambda: Cost(((metric.n_layers or 1, "explainer", batch),)),
        "pointing_game": lambda: Cost(((1, "scan", batch),)),
        "energy_pointing_game": lambda: Cost(((1, "scan", batch),)),
        "box_ratio": lambda: Cost(((1, "scan", batch),)),
        "fidelity": lambda: Cost(((len(metric.percents), "forward", metric.chunk_size),)),
        "contrastivity": lambda: Cost(((num_classes - 1 if metric.classes == "all" else metric.classes,
                                        "explainer", batch),)),
        "fgsm_robustness": lambda: Cost(((1, "input", batch), (1, "forward", batch), (1, "explainer", batch))),
        "occlusion_correlation": lambda: _occlusion_cost(metric.occlusion_args["patch_size"],
                                                         metric.occlusion_args["stride"],
                                                         metric.occlusion_args["chunk_size"], batch, size),
        "one_pixel_sensitivity": lambda: Cost(((metric.popsize * (metric.maxiter + 1), "forward",
                                                min(metric.chunk_size, metric.popsize)), (1, "explainer", 1))),
    }
    if name not in table:
        raise KeyError(f"No floor is defined for metric {name!r}; add it to perf/floors.py.")
    return table[name]()


def _curve_cost(metric: object, height: int, width: int) -> Cost:
    """RISE: one perturbed forward per step (the unperturbed end point is not counted)."""
    from benchmark.metrics.functional.insertion_deletion import curve_steps

    steps = curve_steps(height, width, metric.pixels_per_step, metric.steps)
    return Cost(((steps, _copy_or_model(metric), metric.chunk_size),))


def _copy_or_model(metric: object) -> str:
    """The unit of a perturbation metric's forwards: the inference copy unless it runs with ``fast=False``."""
    return "copy" if getattr(metric, "fast", True) else "forward"
