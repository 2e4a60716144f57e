"""The protocol's minimum passes per image, beside those a run counts (:mod:`benchmark.passes`).

For one method and one batch, the measured explainer call ``E`` (its passes per image, whatever they are) is taken
as given. What the protocol needs on top of it is:

* top-k maps: one call ``E`` per other top-k class. They need nothing for a method whose maps do not depend on the
  class (``class_independent``: Eigen-CAM, random, ...; the module reuses the map) or whose masked forwards score
  every class at once (``scores_every_class``: Score-CAM, Ablation-CAM, RISE, ...).
* Average Drop / Increase: one forward of ``x * CAM``. Coherency: one call ``E`` on ``x * CAM``, whose forward
  also gives the drop's probability; when ``E`` makes no forward of its own, one forward is added. (``E`` is
  measured on ``x``: where a method's cost depends on the input, as Score-CAM's live channels, the call on
  ``x * CAM`` costs a little more or less.)
* Deletion: ``n_steps - 1`` forwards. ``p(x)`` is the batch's forward, and the fully deleted image is the same
  constant for every image (one forward per backbone, not counted).
* Insertion: ``n_steps - 1`` forwards, plus the blurred image's, which every method shares (1 / methods).
  The module computes both curves' endpoints once per batch for every method (the "batch" phase: ``p(x)`` on the
  curves' inference copy, the blurred images and one all-zero image), so the methods' own curve passes are the
  ``n_steps - 1`` inner points each.
* Complexity, ADCC, and the box, mask and pointing metrics: nothing beyond the maps.
* Any other metric that runs the model (``needs`` ``model`` or ``explain``): not modelled. Its measured metric
  passes count as its minimum, and :func:`minimum_passes` names it.

Passes are images through the network, with forward, backward and partial passes summed (:mod:`benchmark.passes`).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

from benchmark.metrics.base import passes_unmodelled

__all__ = ["minimum_passes", "pass_columns"]


def minimum_passes(explainer: object, metrics: Mapping[str, object], measured: Mapping[str, float],
                   image_hw: Tuple[int, int], n_methods: int) -> Tuple[float, List[str]]:
    """The minimum passes per image for ``explainer`` and its ``metrics`` (name -> metric), and the names of the
    metrics not modelled.

    ``measured`` holds the passes per image of this method's batch, keyed ``"<phase>/<kind>"`` as
    :meth:`benchmark.passes.PassCounter.per_image` gives them.

    Examples:
        >>> class Grad: class_independent = scores_every_class = False
        >>> from benchmark.metrics.insertion_deletion import Deletion, Insertion
        >>> measured = {"explainer/forward": 1.0, "explainer/backward": 1.0, "topk/forward": 1.0,
        ...             "topk/backward": 1.0, "metric/forward": 40.0, "metric/backward": 1.0}
        >>> minimum_passes(Grad(), {"deletion": Deletion(steps=16), "insertion": Insertion(steps=16)}, measured,
        ...                (32, 32), 4)  # the call 2, then 15 inner points each and a quarter of the blurred image
        (32.25, [])
    """
    def phase(name: str, kinds: Sequence[str] = ("forward", "backward", "partial")) -> float:
        return math.fsum(measured.get(f"{name}/{kind}", 0.0) for kind in kinds)

    call = phase("explainer")
    needs = frozenset().union(*(getattr(m, "needs", frozenset()) for m in metrics.values()))
    free = getattr(explainer, "class_independent", False) or getattr(explainer, "scores_every_class", False)
    topk = 0.0 if free or "topk" not in needs else phase("topk")
    metric: List[float] = []
    if "expl_saliency" in needs:
        metric += [call, 0.0 if phase("explainer", ("forward",)) > 0 else 1.0]
    elif "expl_probs" in needs:
        metric.append(1.0)
    unmodelled = []
    for name, instance in metrics.items():
        if getattr(instance, "passes_modelled", False):  # e.g. the curves: their inner points
            metric.append(instance.modelled_passes(image_hw, n_methods))
        elif passes_unmodelled(instance):  # the others need only the maps
            unmodelled.append(name)
    if unmodelled:  # their passes cannot be told apart from the others': the whole metric phase counts as needed
        metric = [phase("metric")]
    # fsum: the correctly rounded total, whatever the order of the metrics and terms (the same bytes in every run)
    return math.fsum([call, topk, *metric]), unmodelled


def pass_columns(measured: Mapping[str, float], minimum: float) -> Dict[str, float]:
    """The :data:`~benchmark.passes.PASS_COLUMNS` of a method's batch: passes per image by phase (all kinds), the
    backward passes among them, and the minimum.

    Examples:
        >>> columns = pass_columns({"explainer/forward": 1.0, "explainer/backward": 1.0, "metric/forward": 3.0}, 4.0)
        >>> columns["passes_explainer"], columns["passes_metric"], columns["passes_backward"], columns["passes_topk"]
        (2.0, 3.0, 1.0, 0.0)
    """
    def total(prefix: str) -> float:
        return float(sum(v for k, v in measured.items() if k.startswith(prefix)))

    return {"passes_explainer": total("explainer/"), "passes_topk": total("topk/"), "passes_metric": total("metric/"),
            "passes_backward": float(sum(v for k, v in measured.items() if k.endswith("/backward"))),
            "passes_minimum": float(minimum), "passes_batch": float(measured.get("batch", 1.0))}
