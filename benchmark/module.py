"""The LightningModule that runs explainers inside ``Trainer.predict``.

``ExplainerModule`` holds one backbone and several explainers. Each ``predict_step`` runs the
backbone once on the batch, picks the class to explain per sample (the label or the
prediction), runs every explainer, and returns one record per (sample, method)::

    {"index": 17, "method": "gradcam", "target_layer": "layer4", "target": 3,
     "prediction": 3, "probability": 0.91, "target_probability": 0.91, "seconds": 0.02,
     "saliency": <(H, W) float32 CPU tensor, or None when keep_maps=False>}

Distributed runs: under ``strategy="ddp"`` Lightning's predict sampler gives rank ``r`` the
indices ``r::world`` without padding, so every index is produced exactly once. A user-supplied
``DistributedSampler`` pads by repeating samples and is refused in ``on_predict_start``. Each
rank returns only its own records: write them with :class:`callbacks.SaliencyWriter` and join
them with :func:`merge_records`, which sorts by dataset index and refuses duplicates.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from benchmark.explainers import create_explainer, list_explainers

__all__ = ["ExplainerModule", "merge_records"]

_TARGETS = ("label", "prediction")


class ExplainerModule(pl.LightningModule):
    """Run a set of explainers on one backbone in the Lightning predict loop.

    Args:
        model: the classifier (``(B, C, H, W) -> (B, K)`` logits), e.g. from ``create_backbone``.
        explainers: registered names, or a mapping name -> keyword arguments of that explainer;
            ``None`` runs every registered explainer.
        target: ``"label"`` explains the batch's ``label``; ``"prediction"`` the top-1 class.
        keep_maps: return the saliency maps (on CPU) in the records; False drops them.
        target_layer: the layer given to every explainer (``None``: papers' layer / auto).
        input_size: ``(C, H, W)`` used to trace the model when the layer is auto-detected.

    Example:
        >>> from torchvision.models import resnet18
        >>> module = ExplainerModule(resnet18(num_classes=4), ["gradcam", "fakecam"])
        >>> batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 3]),
        ...          "index": torch.tensor([10, 11])}
        >>> records = module.predict_step(batch, 0)
        >>> [(r["index"], r["method"], r["target"]) for r in records]
        [(10, 'gradcam', 0), (11, 'gradcam', 3), (10, 'fakecam', 0), (11, 'fakecam', 3)]
    """

    def __init__(self, model: nn.Module, explainers: Union[Sequence[str], Mapping[str, Mapping[str, Any]], None] = None,
                 target: str = "label", keep_maps: bool = True, target_layer: Optional[str] = None,
                 input_size: Sequence[int] = (3, 224, 224)) -> None:
        super().__init__()
        if target not in _TARGETS:
            raise ValueError(f"Expected `target` to be one of {_TARGETS}, but got {target!r}.")
        if explainers is None:
            explainers = list_explainers()
        if isinstance(explainers, str):
            raise TypeError(
                f"Expected `explainers` to be a list of names or a mapping, but got the str {explainers!r}.")
        config = dict(explainers) if isinstance(explainers, Mapping) else {name: {} for name in explainers}
        if not config:
            raise ValueError("Expected at least one explainer, but got none.")
        self.model = model.eval()
        self.target = target
        self.keep_maps = bool(keep_maps)
        self.explainers = {
            name: create_explainer(name, model, **{"target_layer": target_layer, "input_size": tuple(input_size),
                                                   **dict(kwargs or {})})
            for name, kwargs in config.items()
        }

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def on_predict_start(self) -> None:
        """Refuse samplers that would duplicate samples across ranks (NOTES.md §2)."""
        self.model.eval()
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
        if not isinstance(batch, Mapping) or "image" not in batch or "index" not in batch:
            keys = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(f"Expected a batch dict with `image` and `index` (and `label`), but got {keys}.")
        images, indices = batch["image"], torch.as_tensor(batch["index"]).long()
        with torch.no_grad():
            probs = self.model(images).float().softmax(dim=1)
        probability, prediction = probs.max(dim=1)
        targets = self._targets(batch, prediction)
        target_probability = probs.gather(1, targets[:, None]).squeeze(1)
        columns = _as_lists(indices, targets, prediction, probability, target_probability)
        records: List[Dict[str, Any]] = []
        for name, explainer in self.explainers.items():
            start = time.perf_counter()
            maps = explainer(images, targets, indices=indices)
            if maps.is_cuda:
                torch.cuda.synchronize(maps.device)
            seconds = (time.perf_counter() - start) / len(images)
            maps = maps.cpu() if self.keep_maps else None
            for i, (index, target, pred, prob, tprob) in enumerate(columns):
                records.append({"index": index, "method": name, "target_layer": explainer.target_layer,
                                "target": target, "prediction": pred, "probability": prob,
                                "target_probability": tprob, "seconds": seconds,
                                "saliency": None if maps is None else maps[i]})
        return records


def _as_lists(*tensors: Tensor) -> List[Tuple]:
    return list(zip(*(t.tolist() for t in tensors)))


def merge_records(parts: Iterable[Iterable[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """Flatten per-batch (per-rank) record lists, sorted by (dataset index, method).

    Raises:
        ValueError: an (index, method) pair occurs twice -- a sampler duplicated samples.

    Example:
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
