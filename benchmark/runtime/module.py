"""The LightningModule that runs explainers inside ``Trainer.predict``.

``ExplainerModule`` holds one backbone and several explainers. Each ``predict_step`` runs the
backbone once on the batch, picks the class to explain per sample (the label or the
prediction), runs every explainer, and returns one record per (sample, method)::

    {"index": 17, "method": "gradcam", "target_layer": "layer4", "layout": "nchw", "target": 3,
     "prediction": 3, "probability": 0.91, "target_probability": 0.91, "seconds": 0.02,
     "metric_values": {"average_drop": 12.5, "pointing_game": [1.0, 3.0, 0.0], ...},
     "passes": {"passes_explainer": 2.0, "passes_topk": 2.0, "passes_metric": 35.0, ...},
     "saliency": <(H, W) float32 CPU tensor, or None when keep_maps=False>}

``passes`` is the method's passes per image of its batch, by phase, the backward ones among them and the protocol's
minimum (:mod:`benchmark.passes`, :mod:`benchmark.runtime.pass_model`).

``metric_values`` holds, per configured metric, the value (or the vector of values) that metric
stored for this sample (float64; NaN = undefined): :func:`benchmark.report.results.reduce_per_sample`
reduces them offline to the same numbers as the online metrics.

Metrics: ``metrics=`` (names or name -> keyword arguments, see
:func:`benchmark.metrics.list_metrics`) adds one metric object per (explainer, metric). Per batch
and explainer only what the configured metrics need is computed, once: the explanation map
``E = x * CAM`` and its class probability, ``CAM(E)``, the maps of the top-k classes, the
model for perturbation curves. At the end of the predict epoch :attr:`results` holds one row
per (method, metric result) -- ``{"method", "metric", "value", "n", "n_invalid"}`` -- reduced
across processes in dataset-index order, so 1 and N processes give the same numbers.

Bad input: datamodules report what they could not use -- per batch ``counts`` (clipped or
dropped boxes, images without boxes, skipped images) and the ``skipped`` samples (``index``,
``id``, ``error``) under ``on_error="skip"``. The module sums and gathers them across processes
into :attr:`data_report` at the end of the predict epoch, so nothing is lost silently.

Distributed runs: under ``strategy="ddp"`` Lightning's predict sampler gives rank ``r`` the
indices ``r::world`` without padding, so every index is produced exactly once. A user-supplied
``DistributedSampler`` pads by repeating samples and is refused in ``on_predict_start``. Each
rank returns only its own records: write them with :class:`callbacks.SaliencyWriter` and join
them with :func:`merge_records`, which sorts by dataset index and refuses duplicates.
"""
from __future__ import annotations

import contextlib
import functools
import time
from collections import Counter
from typing import (
    Any,
    Collection,
    ContextManager,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from benchmark import passes
from benchmark.explainers import default_explainers, resolve_explainer
from benchmark.explainers.base import check_maps, map_status
from benchmark.metrics import MetricInputs, create_metric
from benchmark.runtime.explainer_setup import (
    Config,
    as_config,
    build_explainer,
    curve_endpoints,
    explain_with,
    topk_maps,
)
from benchmark.runtime.pass_model import minimum_passes, pass_columns
from datamodules.shards import current_shard

__all__ = ["ExplainerModule", "merge_records"]

_TARGETS = ("label", "prediction")


class ExplainerModule(pl.LightningModule):
    """Run a set of explainers on one backbone in the Lightning predict loop.

    Args:
        model: the classifier (``(B, C, H, W) -> (B, K)`` logits), e.g. from ``create_backbone``.
        explainers: registered names or user specs (``"my_cam.py:MyCAM"``, ``"pkg.mod:MyCAM"``, see
            :mod:`benchmark.explainers.plugins`), or a mapping of those -> keyword arguments;
            ``None`` runs :func:`~benchmark.explainers.default_explainers` (every registered CAM method and baseline;
            the pixel-attribution methods run only when named).
        target: ``"label"`` explains the batch's ``label``; ``"prediction"`` the top-1 class.
        keep_maps: return the saliency maps (on CPU) in the records; False drops them; a collection of
            dataset indices keeps only those samples' maps (e.g. the first few, for figures).
        target_layer: the layer given to every explainer that uses one (``None``: the default layer, see
            :mod:`benchmark.explainers.layers`).
        layout: that layer's layout (``"nchw"``, ``"nhwc"``, ``"tokens:P"``, see
            :mod:`benchmark.explainers.layouts`); ``None`` decides it (ambiguous layers are refused).
        input_size: ``(C, H, W)`` used to trace the model when the layer is auto-detected.
        metrics: metric names, or a mapping name -> keyword arguments; ``None``: no metric.
        top_k: number of top classes whose maps metrics needing "topk" get (localization, top-5).

    Resume: :attr:`done` maps a shard id (:mod:`datamodules.shards`) to the methods whose results
    for that shard are already on disk; ``predict_step`` runs only the other methods.

    Examples:
        >>> from torchvision.models import resnet18
        >>> module = ExplainerModule(resnet18(num_classes=4), ["gradcam", "fakecam"])
        >>> batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 3]),
        ...          "index": torch.tensor([10, 11])}
        >>> records = module.predict_step(batch, 0)
        >>> [(r["index"], r["method"], r["target"]) for r in records]
        [(10, 'gradcam', 0), (11, 'gradcam', 3), (10, 'fakecam', 0), (11, 'fakecam', 3)]
    """

    def __init__(self, model: nn.Module, explainers: "Config" = None, target: str = "label",
                 keep_maps: Union[bool, Collection[int]] = True, target_layer: Optional[str] = None,
                 input_size: Sequence[int] = (3, 224, 224), metrics: Config = None, top_k: int = 5,
                 layout: Optional[str] = None, reduce: bool = True) -> None:
        super().__init__()
        #: reduce the metrics into :attr:`results` at the end of predict (a collective call under DDP). The run
        #: passes False: it renders from the per-sample files, and a rank left without a shard to compute
        #: (a resume, or fewer shards than processes) skips the epoch-end hooks, so no collective may live there
        self.reduce = bool(reduce)
        self.allow_zero_length_dataloader_with_multiple_devices = not self.reduce
        if target not in _TARGETS:
            raise ValueError(f"Expected `target` to be one of {_TARGETS}, but got {target!r}.")
        config = as_config(default_explainers() if explainers is None else explainers, "explainers")
        config = {resolve_explainer(spec): kwargs for spec, kwargs in config.items()}  # files, modules, plugins
        if not config:
            raise ValueError("Expected at least one explainer, but got none.")
        self.model = model.eval()
        self.target = target
        self.keep_maps = keep_maps if isinstance(keep_maps, bool) else frozenset(int(i) for i in keep_maps)
        self.explainers = {name: build_explainer(name, model, target_layer, layout, input_size, kwargs)
                           for name, kwargs in config.items()}
        metric_config = as_config(metrics or {}, "metrics")
        self.metrics = nn.ModuleDict({f"{method}/{name}": create_metric(name, **dict(kwargs or {}))
                                      for method in self.explainers for name, kwargs in metric_config.items()})
        self.top_k = int(top_k)
        self.results: List[Dict[str, Any]] = []
        #: ``{"counts": {name: int}, "skipped": [{"index", "id", "error"}, ...]}`` over all processes.
        self.data_report: Dict[str, Any] = {"counts": {}, "skipped": []}
        self._counts: Counter = Counter()
        self._skipped: List[Dict[str, Any]] = []
        #: shard id -> methods already finished for it (set by the runner when resuming)
        self.done: Dict[int, FrozenSet[str]] = {}
        self._endpoints: Dict[tuple, Any] = {}  # the batch's perturbation-curve endpoints, shared by every method
        self._logged_batches = 0

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    @property
    def layers(self) -> Dict[str, Dict[str, str]]:
        """Method -> ``{"target_layer", "layout"}``: the layer each explainer reads and its layout
        (``"input"`` / ``"-"`` for methods that use no layer)."""
        return {name: {"target_layer": str(e.target_layer), "layout": str(e.layout) if e.layout is not None else "-"}
                for name, e in self.explainers.items()}

    def on_predict_start(self) -> None:
        """Reset the metrics (ddp_spawn shares their state buffers, NOTES.md §2) and refuse
        samplers that would duplicate samples across ranks."""
        self.model.eval()
        for metric in self.metrics.values():
            metric.reset()
        self._counts, self._skipped = Counter(), []
        loaders = self.trainer.predict_dataloaders
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            for sampler in (getattr(loader, "sampler", None),
                            getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
                if isinstance(sampler, DistributedSampler) and not isinstance(sampler, UnrepeatedDistributedSampler):
                    raise ValueError(
                        f"The predict DataLoader uses a {type(sampler).__name__}, which pads the dataset "
                        "by repeating samples across ranks; remove it and let Lightning inject its "
                        "unrepeated sampler (Trainer(use_distributed_sampler=True), the default).")

    def _targets(self, batch: Mapping[str, Any], predictions: Tensor) -> Tensor:
        if self.target == "prediction":
            return predictions
        labels = batch.get("label")
        if not isinstance(labels, Tensor):
            raise ValueError("target='label' needs a `label` tensor in the batch; use target='prediction' "
                             "for unlabelled data.")
        return labels.to(predictions.device).long()

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> List[Dict[str, Any]]:
        """Explain one batch; see the module docstring for the record format."""
        with passes.counting(self.model) as counter:
            return self._explain_batch(batch, batch_idx, dataloader_idx, counter)

    def _explain_batch(self, batch, batch_idx, dataloader_idx, counter: passes.PassCounter) -> List[Dict[str, Any]]:
        if isinstance(batch, Mapping):
            self._counts.update({k: int(v) for k, v in (batch.get("counts") or {}).items()})
            self._skipped.extend(dict(s) for s in batch.get("skipped") or [])
            if "image" not in batch and "skipped" in batch:
                return []  # every sample of the batch was unreadable (on_error="skip")
        if not isinstance(batch, Mapping) or "image" not in batch or "index" not in batch:
            keys = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(f"Expected a batch dict with `image` and `index` (and `label`), but got {keys}.")
        images, indices = batch["image"], torch.as_tensor(batch["index"]).long()
        with torch.no_grad(), self._section("forward"), passes.phase("batch"):
            probs = self.model(images).float().softmax(dim=1)
            self._endpoints = curve_endpoints(self.metrics.values(), self.model, images)  # shared by every method
        probability, prediction = probs.max(dim=1)
        targets = self._targets(batch, prediction)
        target_probability = probs.gather(1, targets[:, None]).squeeze(1)
        columns = _as_lists(indices, targets, prediction, probability, target_probability)
        records: List[Dict[str, Any]] = []
        trainer = self._trainer
        done = self.done.get(current_shard(trainer, batch_idx, dataloader_idx, batch), frozenset())
        layouts = {name: layer["layout"] for name, layer in self.layers.items()}
        for name, explainer in self.explainers.items():
            if name in done:
                continue
            for callback in trainer.callbacks if trainer is not None else ():
                if hasattr(callback, "on_explainer_start"):
                    callback.on_explainer_start(name)
            metrics = {key.split("/")[1]: m for key, m in self.metrics.items() if key.split("/")[0] == name}
            topk = None  # the top-k classes' maps, when the explainer's call gives them too
            start, before = time.perf_counter(), counter.snapshot()
            with self._section(f"explainer/{name}"), passes.phase("explainer"):
                if explainer.scores_every_class and any("topk" in m.needs for m in metrics.values()):
                    classes = torch.cat([targets[:, None], probs.topk(min(self.top_k, probs.shape[1]), 1).indices], 1)
                    every, raws = explainer.class_maps(images, classes, indices)
                    maps, raw_max, topk = every[:, 0], raws[:, 0], (every[:, 1:], raws[:, 1:], classes[:, 1:])
                else:
                    maps = explainer(images, targets, indices=indices)
                    raw_max = explainer.last_raw_max
            check_maps(name, maps, images)
            if maps.is_cuda:
                torch.cuda.synchronize(maps.device)
            seconds = (time.perf_counter() - start) / len(images)
            status = map_status(maps)
            per_sample: Dict[str, List[Any]] = {}
            if metrics:
                with self._section(f"metrics/{name}"), passes.phase("metric"):
                    self._update_metrics(list(metrics.values()), explainer, batch, images, targets, indices,
                                         (maps, raw_max), probs, target_probability, topk)
                not_finite = torch.tensor([s == "not_finite" for s in status])
                if not_finite.any():  # undefined for every metric, whatever its formula makes of NaN
                    for metric in metrics.values():
                        metric.invalidate_last(not_finite)
                # each update stored one row per sample, in batch order: the per-sample values of this batch
                per_sample = {metric: m.values[-1].cpu().tolist() for metric, m in metrics.items()}
            kept = [self.keep_maps if isinstance(self.keep_maps, bool) else row[0] in self.keep_maps
                    for row in columns]
            maps = maps.cpu() if any(kept) else None
            spent = {**counter.per_image(len(images), since=before),  # this method's passes per image of the batch
                     "batch": counter.per_image(len(images)).get("batch/forward", 0.0)}  # and the shared ones
            minimum, _ = minimum_passes(explainer, metrics, spent, tuple(images.shape[-2:]), len(self.explainers))
            for i, (index, target, pred, prob, tprob) in enumerate(columns):
                records.append({"index": index, "method": name, "target_layer": explainer.target_layer,
                                "layout": layouts[name], "map_status": status[i], "target": target,
                                "prediction": pred, "probability": prob,
                                "target_probability": tprob, "seconds": seconds,
                                "passes": pass_columns(spent, minimum),
                                "metric_values": {metric: rows[i] for metric, rows in per_sample.items()},
                                "saliency": maps[i] if kept[i] else None})
        return records

    def _section(self, name: str) -> ContextManager:
        """A section of the trainer's profiler (``--trainer.profiler simple``: time per explainer and per
        explainer's metrics); nothing without a trainer."""
        trainer = self._trainer
        return trainer.profiler.profile(f"[cam-bench] {name}") if trainer is not None else contextlib.nullcontext()

    def _update_metrics(self, metrics, explainer, batch, images, targets, indices, maps, probs, full_probs,
                        topk=None) -> None:
        """Compute once what ``metrics`` need for this explainer and batch, then update them.

        ``maps`` is ``(saliency, raw maxima or None)`` of the target classes; ``topk`` the maps, raw maxima and
        indices of the top-k classes when the explainer's call already gave them (:meth:`BaseExplainer.class_maps`).
        """
        maps, target_raw_max = maps
        needs = frozenset().union(*(m.needs for m in metrics))
        boxes, box_labels = batch.get("boxes"), batch.get("box_labels")
        if "boxes" in needs and (boxes is None or box_labels is None):
            names = [type(m).__name__ for m in metrics if "boxes" in m.needs]
            raise ValueError(f"Metrics {names} need `boxes` and `box_labels` in the batch; this data has none.")
        target_boxes = None
        if boxes is not None and box_labels is not None:
            target_boxes = [b[torch.as_tensor(lab, device=b.device) == t]
                            for b, lab, t in zip(boxes, box_labels, targets.tolist())]
        labels = batch.get("label")
        inputs = MetricInputs(images, targets, indices, maps, full_probs, probs,
                              labels=labels.to(targets.device).long() if isinstance(labels, Tensor) else None,
                              target_boxes=target_boxes, boxes=boxes, box_labels=box_labels,
                              difficult=batch.get("difficult_item"), model=self.model if "model" in needs else None,
                              extra={**{k: v for k, v in batch.items() if k in ("masks",)},
                                     "curve_endpoints": self._endpoints})
        if needs & {"expl_probs", "expl_saliency"}:
            explanation = images * maps.unsqueeze(1).to(images.dtype)  # E = x * CAM (normalised space)
            logits = None
            if "expl_saliency" in needs:
                inputs.expl_saliency = explainer(explanation, targets, indices=indices)
                logits = explainer.clean_logits  # the forward of CAM(E) gives E's probabilities too
            if "expl_probs" in needs:
                if logits is None:
                    with torch.no_grad():
                        logits = self.model(explanation)
                inputs.expl_probs = logits.float().softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
        if "explain" in needs:  # maps of other classes / perturbed inputs, seeded like the batch's own maps
            inputs.explain = functools.partial(explain_with, explainer, indices)
            inputs.explainer = explainer
        if "topk" in needs:
            if topk is not None:  # the explainer's call gave them, with its classes
                inputs.topk_saliency, raw_max, inputs.topk_classes = topk
            else:
                inputs.topk_classes = probs.topk(min(self.top_k, probs.shape[1]), dim=1).indices
                inputs.topk_saliency, raw_max = topk_maps(explainer, images, targets, indices, maps, target_raw_max,
                                                          inputs.topk_classes)
            peak = raw_max.amax(dim=1, keepdim=True)  # relative to the image's strongest map
            inputs.extra["topk_raw_max"] = torch.where(peak > 0, raw_max / peak.where(peak > 0, 1.0), 0.0)
        for metric in metrics:
            metric.update_from(inputs)

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Log each method's seconds per image to the trainer's logger (e.g. CSV), when it has one."""
        if self._trainer is not None and self.logger is not None and outputs:
            seconds = {f"seconds_per_image/{r['method']}": r["seconds"] for r in outputs}
            self.logger.log_metrics({**seconds, "images": len(batch["image"])}, step=self._logged_batches)
            self._logged_batches += 1

    def on_predict_epoch_end(self) -> None:
        """Reduce every metric (across processes, in dataset-index order) into :attr:`results` (``reduce``)."""
        self.results = []
        if not self.reduce:
            return
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        parts = [(dict(self._counts), self._skipped)]
        if distributed:
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, (dict(self._counts), self._skipped))
        counts: Counter = Counter()
        for part_counts, _ in parts:
            counts.update(part_counts)
        self.data_report = {"counts": dict(sorted(counts.items())),
                            "skipped": sorted((s for _, part in parts for s in part), key=lambda s: s["index"])}
        for key, metric in self.metrics.items():
            method, name = key.split("/")
            if not distributed and not metric.indices:  # never updated (a collective call under DDP)
                continue
            summary = metric.summary()
            counts = {"n": summary.pop("n"), "n_invalid": summary.pop("n_invalid")}
            for part, value in summary.items():
                self.results.append({"method": method, "metric": f"{name}_{part}" if part else name,
                                     "value": value, **counts})
        if self._trainer is not None and self.logger is not None and self.results:
            self.logger.log_metrics({f"{r['method']}/{r['metric']}": r["value"] for r in self.results},
                                    step=self._logged_batches)
            self.logger.save()


def _as_lists(*tensors: Tensor) -> List[Tuple]:
    return list(zip(*(t.tolist() for t in tensors)))


def merge_records(parts: Iterable[Iterable[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """Flatten per-batch (per-rank) record lists, sorted by (dataset index, method).

    Raises:
        ValueError: an (index, method) pair occurs twice -- a sampler duplicated samples.

    Examples:
        >>> merge_records([[{"index": 2, "method": "a"}], [{"index": 1, "method": "a"}]])
        [{'index': 1, 'method': 'a'}, {'index': 2, 'method': 'a'}]
    """
    records = [dict(r) for part in parts for r in part]
    records.sort(key=lambda r: (r["index"], r["method"]))
    keys = [(r["index"], r["method"]) for r in records]
    duplicates = sorted({k for k, nxt in zip(keys, keys[1:]) if k == nxt})
    if duplicates:
        raise ValueError(f"Expected each (index, method) once, but got duplicates {duplicates[:5]}.")
    return records
