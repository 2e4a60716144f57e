"""The options users of big runs reach for, each measured against the default on the same inputs.

* the plain forward: ``torch.no_grad`` instead of ``torch.inference_mode``, channels-last,
  ``torch.autocast`` bfloat16 (what ``--trainer.precision bf16-mixed`` wraps ``predict_step`` in),
  the batch-norm-folded channels-last ``InferenceCopy``, and that copy compiled;
* Grad-CAM: channels-last model and input; bf16 autocast;
* Score-CAM: larger chunks, ``autocast="bfloat16"``, ``compile=True`` -- beside grad-cam's ScoreCAM;
* Deletion + Insertion: larger chunks, bf16 autocast, ``compile=True``.

Each row gives the option's time per image, its ratio to the default (below 1 = faster), the
largest difference of its output from the default's, and one-off costs (compilation).
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from benchmark.explainers import create_explainer
from benchmark.explainers.fastpath import InferenceCopy
from benchmark.metrics.insertion_deletion import Deletion, Insertion
from perf.measure import Bench
from perf.timing import median_time, round_ratios

__all__ = ["OptionRow", "measure_options"]

BF16 = "autocast bf16 (= --trainer.precision bf16-mixed)"


@dataclass
class OptionRow:
    """One option against the default (seconds per image)."""

    backbone: str
    batch: int
    item: str
    option: str
    default: float
    ours: float
    peer: Optional[float] = None  #: option / grad-cam's implementation (via the default's ratio in the main table)
    diff: Optional[float] = None  #: max |option - default| of the maps / probabilities
    one_off: Optional[float] = None  #: seconds of one-off work (compilation), not in ``ours``
    ratios: Tuple[float, ...] = ()  #: option / default within each round

    @property
    def ratio(self) -> float:
        """option / default: the median of the ratios taken within each round (of the medians without them).

        Examples:
            >>> OptionRow("m", 1, "scorecam", "x", 2.0, 1.0, ratios=(0.5, 0.4, 0.9)).ratio
            0.5
        """
        return statistics.median(self.ratios) if self.ratios else self.ours / self.default

    @property
    def spread(self) -> Optional[Tuple[float, float]]:
        """Lowest and highest option / default over the rounds; ``None`` without per-round times."""
        return (min(self.ratios), max(self.ratios)) if self.ratios else None


def _autocast(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    def run():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return fn()
    return run


def _forward_options(bench: Bench, batch: int) -> List[OptionRow]:
    x, _ = bench.inputs(batch)
    model, device = bench.model, bench.device
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)
    fast, compiled = InferenceCopy(model), InferenceCopy(model, compile=True)

    def run(net, inputs, mode=torch.inference_mode):
        def call():
            with mode():
                return net(inputs)
        return call

    calls = {"default": run(model, x), "torch.no_grad": run(model, x, torch.no_grad),
             "channels_last": run(last, x_last), BF16: _autocast(run(model, x), device),
             "InferenceCopy (BN folded, channels_last)": run(fast, x),
             "InferenceCopy + compile=True": run(compiled, x)}
    start = time.perf_counter()
    run(compiled, x)()
    one_off = time.perf_counter() - start
    rounds: Dict[str, List[float]] = {}
    t = median_time(calls, bench.repeats, bench.sync, pause=bench.pause, rounds=rounds)
    reference = calls["default"]()
    rows = []
    for name in list(calls)[1:]:
        diff = (calls[name]().float() - reference).abs().max().item()
        rows.append(OptionRow(bench.backbone, batch, "plain forward (logits)", name, t["default"] / batch,
                              t[name] / batch, diff=diff, one_off=one_off if "compile" in name else None,
                              ratios=tuple(round_ratios(rounds, name, "default"))))
    return rows


def _explainer_options(bench: Bench, name: str, batch: int, variants: Dict[str, dict], repeats: int,
                       default_vs_peer: Optional[float] = None) -> List[OptionRow]:
    """``default_vs_peer``: our default's time / grad-cam's from the main table; the option's ratio to
    grad-cam is derived from it (``OptionRow.peer`` then holds that ratio, not a time)."""
    x, t = bench.inputs(batch)
    model = bench.model
    shape = (3, bench.size, bench.size)
    explainers = {"default": create_explainer(name, model, input_size=shape)}
    calls: Dict[str, Callable[[], object]] = {"default": lambda: explainers["default"](x, t)}
    one_off: Dict[str, float] = {}
    for label, kwargs in variants.items():
        kwargs = dict(kwargs)
        autocast = kwargs.pop("_autocast", False)
        channels_last = kwargs.pop("_channels_last", False)
        net = copy.deepcopy(model).to(memory_format=torch.channels_last) if channels_last else model
        inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        explainers[label] = create_explainer(name, net, input_size=shape, **kwargs)
        fn = (lambda e=explainers[label], i=inputs: e(i, t))
        calls[label] = _autocast(fn, bench.device) if autocast else fn
        if kwargs.get("compile"):
            start = time.perf_counter()
            with torch.no_grad():
                explainers[label].fast_model(x[:1].repeat(explainers[label].chunk_size, 1, 1, 1))
            one_off[label] = time.perf_counter() - start
    small = bench.small
    warm = {label: (lambda e=e: e(small, t[:1])) for label, e in explainers.items() if label not in one_off}
    rounds: Dict[str, List[float]] = {}
    times = median_time(calls, repeats, bench.sync, warm, pause=bench.pause, rounds=rounds)
    reference = calls["default"]()
    rows = []
    for label in variants:
        diff = (calls[label]().float() - reference).abs().max().item()
        row = OptionRow(bench.backbone, batch, name, label, times["default"] / batch, times[label] / batch,
                        None, diff, one_off.get(label), tuple(round_ratios(rounds, label, "default")))
        row.peer = default_vs_peer * row.ratio if default_vs_peer else None
        rows.append(row)
    return rows


def _curve_options(bench: Bench, batch: int, maps: torch.Tensor, repeats: int) -> List[OptionRow]:
    x, t = bench.inputs(batch)
    model, device = bench.model, bench.device
    variants = {"default": {}, "chunk_size=256": {"chunk_size": 256}, BF16: {}, "compile=True": {"compile": True}}
    pairs = {label: (Deletion(**kw), Insertion(**kw)) for label, kw in variants.items()}

    def curves(label: str) -> Callable[[], torch.Tensor]:
        def run():
            with torch.inference_mode():
                return torch.cat([m._curve(m._runner(model), x, maps, t) for m in pairs[label]], dim=1)
        return _autocast(run, device) if label == BF16 else run

    calls = {label: curves(label) for label in variants}
    one_off = 0.0
    with torch.inference_mode():  # build the inference copies (the compiled one for the chunk's shape: one-off)
        for label, metrics in pairs.items():
            start = time.perf_counter()
            for metric in metrics:
                metric._runner(model)(x[:1].repeat(metric.chunk_size if label == "compile=True" else 1, 1, 1, 1))
            if label == "compile=True":
                one_off = time.perf_counter() - start
    rounds: Dict[str, List[float]] = {}
    times = median_time(calls, repeats, bench.sync, warmup={label: (lambda: None) for label in variants},
                        pause=bench.pause, rounds=rounds)
    reference = calls["default"]()
    return [OptionRow(bench.backbone, batch, "deletion + insertion (probabilities)", label,
                      times["default"] / batch, times[label] / batch,
                      diff=(calls[label]() - reference).abs().max().item(),
                      one_off=one_off if "compile" in label else None,
                      ratios=tuple(round_ratios(rounds, label, "default")))
            for label in list(variants)[1:]]


def measure_options(bench: Bench, batch: int, perturb_images: int, repeats: int, curve_maps: torch.Tensor,
                    scorecam_vs_peer: Optional[float] = None) -> List[OptionRow]:
    """Every option row for one backbone: forward and Grad-CAM at ``batch`` (``bench.repeats`` rounds),
    Score-CAM and the curves on ``perturb_images`` images (``repeats`` rounds; ``curve_maps`` their
    Grad-CAM maps; ``scorecam_vs_peer`` = our default Score-CAM / grad-cam's, from the main table)."""
    rows = _forward_options(bench, batch)
    rows += _explainer_options(bench, "gradcam", batch, {"channels_last": {"_channels_last": True},
                                                         BF16: {"_autocast": True}}, bench.repeats)
    rows += _explainer_options(bench, "scorecam", perturb_images,
                               {"chunk_size=128": {"chunk_size": 128}, 'autocast="bfloat16"': {"autocast": "bfloat16"},
                                "compile=True": {"compile": True}}, repeats, scorecam_vs_peer)
    rows += _curve_options(bench, perturb_images, curve_maps, repeats)
    return rows
