"""Measurements of the speed harness: the floor units, and one row per explainer / metric.

Every row times our implementation, the floor units it needs (:mod:`perf.floors`)
and the peers' implementations in one :func:`~perf.timing.median_time` call, so they
are measured side by side, alternated, on the same inputs; peak memory comes from the last round.
Each row keeps the per-round times of ours, the plain forward, the peers and the floor, so a ratio is the
median of the ratios taken within each round (:meth:`Row.ratio`), with their range (:meth:`Row.spread`).
"""
from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmark.explainers import create_explainer
from benchmark.explainers.fastpath import InferenceCopy
from benchmark.explainers.layouts import Layout
from benchmark.explainers.tail import split_at_layer
from benchmark.runtime.module import ExplainerModule
from perf.floors import Cost, explainer_cost, metric_cost
from perf.peers import PEER_METRICS, peer_calls, peer_metric
from perf.timing import median_time, round_ratios

__all__ = ["Bench", "Row"]


@dataclass
class Row:
    """One line of the results table (times in seconds per image)."""

    backbone: str
    batch: int
    item: str
    cost: Cost
    floor: Optional[float]
    ours: float
    forward: float  #: the plain forward per image at ``batch``, measured side by side
    peers: Dict[str, float] = field(default_factory=dict)
    peak: Dict[str, Optional[float]] = field(default_factory=dict)
    note: str = ""
    #: seconds per image in each round: ``"ours"``, ``"forward"``, each peer and ``"floor"``
    rounds: Dict[str, List[float]] = field(default_factory=dict)

    def ratio(self, other: str) -> Optional[float]:
        """ours / ``other`` (``"forward"`` or a peer): the median of the ratios taken within each round; the ratio
        of the medians without per-round times; ``None`` when ``other`` was not measured.

        Examples:
            >>> row = Row("m", 8, "gradcam", None, None, 1.0, 0.75,
            ...           rounds={"ours": [1.0, 1.5, 0.9], "forward": [1.0, 0.5, 0.6]})
            >>> row.ratio("forward"), row.spread("forward")
            (1.5, (1.0, 3.0))
        """
        ratios = round_ratios(self.rounds, "ours", other)
        if ratios:
            return statistics.median(ratios)
        bottom = self.forward if other == "forward" else self.peers.get(other)
        return self.ours / bottom if bottom else None

    def spread(self, other: str) -> Optional[Tuple[float, float]]:
        """Lowest and highest ours / ``other`` (``"forward"`` or a peer) over the rounds, each ratio taken within
        one round; ``None`` without per-round times."""
        ratios = round_ratios(self.rounds, "ours", other)
        return (min(ratios), max(ratios)) if ratios else None

    def efficiency(self) -> Optional[float]:
        """floor / ours: the median over rounds (the floor's units timed in the same rounds); ``None`` without a
        floor.

        Examples:
            >>> Row("m", 8, "scorecam", None, 2.0, 2.0, 1.0, rounds={"ours": [2.0, 4.0, 2.0],
            ...                                                     "floor": [2.0, 2.0, 1.0]}).efficiency()
            0.5
        """
        if self.floor is None:
            return None
        ratios = round_ratios(self.rounds, "floor", "ours")
        return statistics.median(ratios) if ratios else self.floor / self.ours


class Bench:
    """The harness's measurements on one backbone (random init, eval mode) and image size; ``layout`` is the
    target layer's (:mod:`benchmark.explainers.layouts`, e.g. ``tokens:1`` for a ViT block; default NCHW)."""

    def __init__(self, backbone: str, model: nn.Module, layer: str, size: int, device: torch.device,
                 repeats: int, seed: int = 0, pause: float = 0.1, layout: Optional[Layout] = None,
                 peers: bool = True) -> None:
        self.backbone, self.model, self.layer, self.size = backbone, model, layer, size
        self.device, self.repeats, self.pause = device, repeats, pause
        self.peers = peers  # False: our rows only (no grad-cam / torch-cam calls)
        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        generator = torch.Generator().manual_seed(seed)
        self._images = torch.randn(64, 3, size, size, generator=generator).to(device)
        with torch.inference_mode():
            targets = model(self._images[:8]).argmax(1).repeat(8)
        self._targets = targets.clone()  # a normal tensor (usable in autograd)
        self.layout = layout or Layout()
        self.channels = self.layout.to_nchw(self._layer_output(self._images[:1]), (size, size)).shape[1]
        self._split = split_at_layer(model, layer)
        self.splits = self._prefix(self._images[:1]) is not None  # the tail units run on the layer's output
        self._copy = InferenceCopy(model)  # what the masked and perturbed forwards run on
        self._maps = torch.rand(64, size, size, generator=generator).to(device)  # for the forward-free units
        self.small = self._small_image(size)  # the perturbation rows' warm-up image

    def _small_image(self, size: int) -> Tensor:
        """A 64 x 64 image when the model takes one (warm-ups of the perturbation methods cost a fraction of a
        call then), else one of the timed size (a fixed-size head or position embedding: ViTs, VGG's flatten)."""
        small = torch.randn(1, 3, min(64, size), min(64, size), device=self.device)
        try:
            with torch.inference_mode():
                self.model(small)
        except (RuntimeError, AssertionError, ValueError):  # what torch, timm and HF raise for a size mismatch
            return self._images[:1]
        return small

    # ------------------------------------------------------------------ inputs and units
    def inputs(self, batch: int) -> Tuple[Tensor, Tensor]:
        """The first ``batch`` fixed images and their predicted classes (up to 64)."""
        return self._images[:batch], self._targets[:batch]

    def _layer_output(self, images: Tensor) -> Tensor:
        out: List[Tensor] = []
        handle = self.model.get_submodule(self.layer).register_forward_hook(lambda m, a, o: out.append(o))
        try:
            with torch.inference_mode():
                self.model(images)
        finally:
            handle.remove()
        return out[0]

    def unit(self, unit: str, batch: int) -> Callable[[], object]:
        """A call that runs one floor unit on ``batch`` images (see :mod:`perf.floors`)."""
        images = self._images[:batch] if batch <= 64 else self._images[:1].repeat(batch, 1, 1, 1)
        targets = self._targets[:1].repeat(batch) if batch > 64 else self._targets[:batch]
        if unit == "forward":
            def forward():
                with torch.inference_mode():
                    self.model(images)
            return forward
        if unit == "copy":
            def copy_forward():
                with torch.inference_mode():
                    self._copy(images)
            return copy_forward
        if unit in ("sort", "scan"):
            maps = self._maps[:batch] if batch <= 64 else self._maps[:1].repeat(batch, 1, 1)
            return lambda: maps.flatten(1).sort(dim=1) if unit == "sort" else maps.flatten(1).amax(dim=1)
        if unit == "grad":
            return lambda: self._grad_pass(images, targets)
        if unit == "input":
            def input_gradient():
                x = images.detach().requires_grad_(True)
                torch.autograd.grad(self.model(x).gather(1, targets[:, None]).sum(), x)
            return input_gradient
        if unit in ("tail", "tailgrad"):
            prefix = self._prefix(images)
            if prefix is None:  # the whole forward (Ablation-CAM's fallback) or gradient pass bounds it from above
                return self.unit("forward" if unit == "tail" else "grad", batch)
            activation, live_ins = prefix
            if unit == "tail":
                def tail():
                    with torch.inference_mode():
                        self._split.run_tail(activation, live_ins)
                return tail
            activation = activation.clone()  # a normal tensor (usable in autograd)
            live_ins = [v.clone() if isinstance(v, Tensor) else v for v in live_ins]

            def tail_gradient():  # on the math attention kernel, as the double backward it stands for must run
                act = activation.detach().requires_grad_(True)
                with sdpa_kernel(SDPBackend.MATH):
                    logits = self._split.run_tail(act, live_ins)
                    torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), act)
            return tail_gradient
        raise KeyError(f"Unknown floor unit {unit!r}.")

    def _splittable(self, cost: Cost) -> Cost:
        """``cost`` with its tail units named as what is timed for them where the model cannot be split at the
        layer: T as F (Ablation-CAM then runs whole forwards too), H as G (an upper bound), so that the floor
        column says what its milliseconds are.

        Examples:
            >>> bench = Bench.__new__(Bench)
            >>> bench.splits = False
            >>> bench._splittable(Cost(((1, "grad", 2), (1, "tailgrad", 2)))).describe()
            '1 G(2) + 1 G(2)'
        """
        if self.splits:
            return cost
        named = {"tail": "forward", "tailgrad": "grad"}
        return Cost(tuple((count, named.get(unit, unit), batch) for count, unit, batch in cost.terms))

    def _prefix(self, images: Tensor) -> Optional[Tuple[Tensor, List[Tensor]]]:
        """The target layer's output and the tail's live-in values for ``images``; ``None`` where the model cannot
        be split there (no split, or live-ins the tail cannot take per image: :meth:`LayerSplit.run_prefix`)."""
        if self._split is None:
            return None
        with torch.inference_mode():
            return self._split.run_prefix(images)

    def _grad_pass(self, images: Tensor, targets: Tensor) -> None:
        """Forward without graph up to the layer, with graph after it; gradient of the logits to the layer."""
        kept: List[Tensor] = []

        def hook(module, args, output):
            act = output.detach().requires_grad_(True)
            kept.append(act)
            torch.set_grad_enabled(True)
            return act.clone()

        handle = self.model.get_submodule(self.layer).register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits = self.model(images)
                torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), kept[0])
        finally:
            handle.remove()

    # ------------------------------------------------------------------------------ rows
    def _timed(self, cost: Cost, calls: Dict[str, Callable[[], object]], batch: int,
               warmup: Optional[Dict[str, Callable[[], object]]] = None,
               repeats: Optional[int] = None) -> Tuple[Dict[str, float], Dict, Dict, Dict[str, List[float]], Dict]:
        """Time ``calls`` with the cost's units (and the plain forward at ``batch``) in the same rounds; the
        units' seconds per image keyed ``(unit, batch)``; the per-image seconds of every round of ``calls``,
        of the plain forward (``"forward"``) and of the floor (``"floor"``); the units' per-image seconds of every
        round keyed ``(unit, batch)`` (for a floor whose counts are known only after the timing). ``explainer``
        units are timed by the caller as calls named ``"explainer <batch>"``."""
        keys = {(u, b) for u, b in {*cost.units(), ("forward", batch)} if u != "explainer"}
        units = {f"unit {u} {b}": self.unit(u, b) for u, b in keys}
        peaks: Dict[str, Optional[float]] = {}
        rounds: Dict[str, List[float]] = {}
        t = median_time({**units, **calls}, repeats or self.repeats, self.sync, warmup, peaks, self.device,
                        self.pause, rounds)
        per_image = {name: [s / batch for s in rounds[name]] for name in calls if not name.startswith("explainer ")}
        per_image["forward"] = [s / batch for s in rounds[f"unit forward {batch}"]]
        unit_rounds = {(u, b): [s / b for s in rounds[f"unit {u} {b}"]] for u, b in keys}
        unit_rounds.update({("explainer", int(name.split()[1])): [s / int(name.split()[1]) for s in rounds[name]]
                            for name in calls if name.startswith("explainer ")})
        per_image["floor"] = _floor_rounds(cost, unit_rounds)
        return t, {(u, b): t[f"unit {u} {b}"] / b for u, b in keys}, peaks, per_image, unit_rounds

    def explainer_row(self, name: str, batch: int, small_warmup: bool = False,
                      repeats: Optional[int] = None, options: Optional[dict] = None) -> Row:
        """Our explainer ``name`` (built with ``options``) and the peers' on ``batch`` images. ``small_warmup``
        warms up on :attr:`small` (64 x 64 where the model takes it) instead of a full call (for the perturbation
        methods)."""
        x, t = self.inputs(batch)
        ours = create_explainer(name, self.model, **{"input_size": (3, self.size, self.size), **(options or {})})
        cost = self._splittable(explainer_cost(name, batch, self.channels, ours, tuple(x.shape[-2:])))
        peers = peer_calls(name, self.model, ours.target_layer, ours) if self.peers else {}
        calls = {"ours": lambda: ours(x, t), **{p: (lambda fn=fn: fn(x, t, None)) for p, fn in peers.items()}}
        warm = None
        if small_warmup:
            small = self.small
            warm = {"ours": lambda: ours(small, t[:1]),
                    **{p: (lambda fn=fn: fn(small, t[:1], None)) for p, fn in peers.items()}}
        times, units, peaks, rounds, _ = self._timed(cost, calls, batch, warm, repeats)
        return Row(self.backbone, batch, name, cost, cost.seconds(units) if cost.terms else None,
                   times["ours"] / batch, units[("forward", batch)], {p: times[p] / batch for p in peers}, peaks,
                   rounds=rounds)

    def metric_row(self, names: Tuple[str, ...], batch: int, maps: Tensor, peer: Optional[str] = None,
                   top_k: int = 5, label: Optional[str] = None, with_explainer: bool = False,
                   repeats: Optional[int] = None,
                   warmup: Optional[Callable[[object], Callable[[], object]]] = None) -> Row:
        """Our metrics ``names`` updated through ``ExplainerModule`` on the Grad-CAM ``maps`` of ``batch``
        images (``with_explainer``: the Grad-CAM call included), optionally beside a peer's."""
        x, t = self.inputs(batch)
        module = ExplainerModule(self.model, ["gradcam"], metrics=list(names), top_k=top_k, keep_maps=False,
                                 input_size=(3, self.size, self.size))
        explainer = module.explainers["gradcam"]
        metrics = [module.metrics[f"gradcam/{n}"] for n in names]
        with torch.inference_mode():
            probs = self.model(x).float().softmax(dim=1)
        full = probs.gather(1, t[:, None]).squeeze(1)
        half = self.size // 2
        box = torch.tensor([[half // 2, half // 2, half + half // 2, half + half // 2]], dtype=torch.float32)
        mask = torch.zeros(1, self.size, self.size, dtype=torch.bool)
        mask[:, half // 2:half + half // 2, half // 2:half + half // 2] = True  # the box's pixels (PxAP)
        batch_dict = {"label": t, "boxes": [box] * batch, "box_labels": [t[i:i + 1] for i in range(batch)],
                      "masks": [mask] * batch}
        raw = torch.ones(batch, device=self.device)

        def update():
            current = explainer(x, t) if with_explainer else maps
            module._update_metrics(metrics, explainer, batch_dict, x, t, torch.arange(batch), (current, raw),
                                   probs, full)

        def floor() -> Cost:
            costs = [metric_cost(n, batch, m, (self.size, self.size), top_k) for n, m in zip(names, metrics)]
            # what several metrics need is computed once per batch (the explanation forward): identical terms once
            terms = tuple(dict.fromkeys(term for c in costs for term in c.terms))
            return Cost((((1, "grad", batch),) if with_explainer else ()) + terms)

        cost = floor()
        calls: Dict[str, Callable[[], object]] = {"ours": update}
        for b in sorted({b for u, b in cost.units() if u == "explainer"}):  # e.g. 10 perturbed copies at once
            calls[f"explainer {b}"] = functools.partial(explainer, *self.inputs(b))
        if peer is not None and self.peers:
            fn = peer_metric(peer, self.model, explainer.target_layer, explainer.layout)
            calls[peer] = lambda: fn(x, t, maps)
        warm = {"ours": warmup(metrics)} if warmup is not None else None
        times, units, peaks, rounds, unit_rounds = self._timed(cost, calls, batch, warm, repeats)
        for key in [k for k in calls if k.startswith("explainer ")]:
            units[("explainer", int(key.split()[1]))] = times[key] / int(key.split()[1])
        cost = floor()  # counts known once a model was seen (MPRT's layer groups); the same units
        rounds["floor"] = _floor_rounds(cost, unit_rounds)
        return Row(self.backbone, batch, label or "+".join(names), cost,
                   cost.seconds(units) if cost.terms else None, times["ours"] / batch, units[("forward", batch)],
                   {p: times[p] / batch for p in calls if p != "ours" and not p.startswith("explainer ")},
                   {k: v for k, v in peaks.items() if not k.startswith("explainer ")},
                   note=PEER_METRICS.get(peer, "") if self.peers else "",
                   rounds=rounds)


def _floor_rounds(cost: Cost, unit_rounds: Dict[Tuple[str, int], List[float]]) -> List[float]:
    """The floor's seconds per image in each round, from its units' per-image seconds in the same rounds (``[]``
    without terms).

    Examples:
        >>> _floor_rounds(Cost(((2, "forward", 8),)), {("forward", 8): [0.5, 1.0]})
        [1.0, 2.0]
    """
    if not cost.terms:
        return []
    n = len(unit_rounds[cost.units()[0]])
    return [cost.seconds({key: unit_rounds[key][i] for key in cost.units()}) for i in range(n)]
