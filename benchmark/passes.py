"""Pass accounting: the images a run sends through the network, by kind and phase.

Kinds, each counted per image:

* ``forward``: one image through the model or through one of its inference copies. The model's forwards are
  counted by a forward pre-hook that :func:`counting` installs. The copies (Score-CAM's, RISE's, the perturbation
  metrics') are counted by :class:`~benchmark.explainers.fastpath.InferenceCopy`.
* ``backward``: one backward pass through the model's logits (to the target layer or to the input). It is
  counted by a hook on the logits of every forward that builds a graph; Shapley-CAM's Hessian-vector product,
  a backward through the first backward's graph, passes there again and counts as a second one.
* ``partial``: one image through a part of the network, either the layers before the target layer or those
  after it (Ablation-CAM's split, :mod:`benchmark.explainers.tail`).

Phases (:func:`phase`): ``batch`` (the module's one forward per batch, shared by every method), ``explainer`` (the
map of the explained class), ``topk`` (the maps of the other top-k classes) and ``metric`` (the metrics' own
passes: ``x * CAM``, ``CAM(x * CAM)``, the perturbation curves, ...). Passes outside any phase are ``other``;
``setup`` holds one-time passes of a process (the random baseline's probe of its layer's grid), which no batch is
charged with, so that the per-sample counts are the same on 1 or N processes.
Networks the run builds itself and calls directly (MPRT's randomized copies) are not counted.

Examples:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18(num_classes=3).eval()
    >>> with counting(model) as counter, phase("explainer"):
    ...     logits = model(torch.randn(2, 3, 32, 32, requires_grad=True))
    ...     _ = torch.autograd.grad(logits[:, 0].sum(), model.fc.weight)
    >>> counter.per_image(2)
    {'explainer/backward': 1.0, 'explainer/forward': 1.0}
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Dict, Iterator, List

from torch import Tensor, nn

__all__ = ["KINDS", "PASS_COLUMNS", "PHASES", "PassCounter", "count", "counting", "phase"]

KINDS = ("forward", "backward", "partial")
PHASES = ("batch", "explainer", "topk", "metric", "setup", "other")
#: the per-sample columns of a method's passes per image (each row holds its batch's passes / the batch's images):
#: the three phases (kinds summed), the backward passes among them, the minimum of
#: :func:`benchmark.runtime.pass_model.minimum_passes`, and the batch's shared passes (its forward and the
#: perturbation curves' endpoints; the same in every method's row)
PASS_COLUMNS = ("passes_explainer", "passes_topk", "passes_metric", "passes_backward", "passes_minimum",
                "passes_batch")

_counters: List["PassCounter"] = []
_phases: List[str] = ["other"]


class PassCounter:
    """Images per ``"<phase>/<kind>"``, as counted while :func:`counting` is open."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def snapshot(self) -> Counter:
        return Counter(self.counts)

    def per_image(self, images: int, since: Counter = None) -> Dict[str, float]:
        """The counts (minus ``since``) divided by ``images``, keys sorted.

        Examples:
            >>> counter = PassCounter()
            >>> counter.counts["metric/forward"] += 6
            >>> counter.per_image(3)
            {'metric/forward': 2.0}
        """
        delta = self.counts - (since or Counter())
        return {key: delta[key] / images for key in sorted(delta)}


def count(kind: str, images: int) -> None:
    """Add ``images`` passes of ``kind`` to every open counter, in the current phase."""
    for counter in _counters:
        counter.counts[f"{_phases[-1]}/{kind}"] += int(images)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the passes made inside the block under phase ``name`` (phases nest: the innermost wins)."""
    _phases.append(name)
    try:
        yield
    finally:
        _phases.pop()


@contextlib.contextmanager
def counting(model: nn.Module) -> Iterator[PassCounter]:
    """Count the passes through ``model`` (and through the inference copies) while the block runs."""
    counter = PassCounter()

    # a deep copy of the model made while counting carries these hooks: only the model itself counts here
    def before(module: nn.Module, args: tuple) -> None:
        if module is model and args and isinstance(args[0], Tensor):
            count("forward", len(args[0]))

    def after(module: nn.Module, args: tuple, output: object) -> None:
        if module is model and isinstance(output, Tensor) and output.requires_grad:
            images = len(output)
            output.register_hook(lambda grad: count("backward", images))

    handles = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    _counters.append(counter)
    try:
        yield counter
    finally:
        _counters.remove(counter)
        for handle in handles:
            handle.remove()
