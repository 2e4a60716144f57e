"""Write every sample's metric values to Parquet, incrementally, per backbone, method and shard.

One file per (backbone, method, shard): ``<out>/per_sample/<backbone>/<method>/shard_<s>.parquet``
when the loader uses fixed shards (:mod:`datamodules.shards`; otherwise ``rank<r>_batch_<dl>_<b>``;
``/`` and ``:`` in names become ``--``; one run directory holds every backbone of a matrix), written
atomically at the end of each predict batch, so a crash loses at most the batch in flight, nothing
has to be gathered in memory, and a re-run skips what is on disk
(:func:`benchmark.runner.folder.finished_shards`). The
batch's data report (``counts``, ``skipped``) goes to ``<backbone>/_data/<shard>.json``.
One row per (dataset index, backbone, method): ``dataset, backbone, method, index, target,
prediction, probability, target_probability, seconds, target_layer, layout, map_status`` (``ok``,
``constant`` or ``not_finite``: :func:`benchmark.explainers.base.map_status`), the method's passes per image of its
batch (:data:`benchmark.passes.PASS_COLUMNS`) and one column per metric: the value the
metric stored for that sample (``double``), or its vector of values (``list<double>``) for metrics
that store several per sample; NaN = undefined.
:func:`benchmark.report.results.read_per_sample` joins the files of all ranks, sorted by dataset index.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from benchmark.passes import PASS_COLUMNS
from benchmark.report.figure_labels import CLASSES_FILE, class_names_of, write_class_names, write_sidecar
from benchmark.runner.folder import atomic_write, safe_name
from datamodules.shards import current_shard

__all__ = ["PER_SAMPLE_COLUMNS", "PerSampleWriter", "records_to_frame"]

#: The fixed columns of a per-sample row (metric columns follow).
PER_SAMPLE_COLUMNS = ("dataset", "backbone", "method", "index", "target", "prediction", "probability",
                      "target_probability", "seconds", "target_layer", "layout", "map_status", *PASS_COLUMNS)


def records_to_frame(records: Sequence[Dict[str, Any]], dataset: str, backbone: str) -> pd.DataFrame:
    """Module records (see :mod:`benchmark.runtime.module`) as per-sample rows.

    Examples:
        >>> rec = {"index": 3, "method": "gradcam", "target": 1, "prediction": 1, "probability": 0.9,
        ...        "target_probability": 0.9, "seconds": 0.01,
        ...        "metric_values": {"complexity": 12.5, "pointing_game": [1.0, 3.0, 0.0]}}
        >>> frame = records_to_frame([rec], "synthetic", "synthetic/res_cnn")
        >>> frame[["method", "index", "complexity", "pointing_game"]].to_dict("records")
        [{'method': 'gradcam', 'index': 3, 'complexity': 12.5, 'pointing_game': [1.0, 3.0, 0.0]}]
    """
    rows: List[Dict[str, Any]] = []
    for rec in records:
        passes = rec.get("passes") or {}
        row = {"dataset": dataset, "backbone": backbone, **{k: rec.get(k) for k in PER_SAMPLE_COLUMNS[2:]},
               **{k: float(passes.get(k, float("nan"))) for k in PASS_COLUMNS}}
        row.update({name: [float(v) for v in values] if isinstance(values, (list, tuple)) else float(values)
                    for name, values in rec.get("metric_values", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


class PerSampleWriter(BasePredictionWriter):
    """Save each predict batch's per-sample metric values as Parquet files, one per method.

    Args:
        output_dir: run directory; files go to ``<output_dir>/per_sample/<backbone>/<method>/``.
        dataset: dataset name written in every row (e.g. ``"synthetic"``).
        backbone: backbone name written in every row.
        mean, std: the normalisation the images were made with (the run passes its datamodule's): records that
            carry a saliency map (see ``ExplainerModule(keep_maps=...)``) are saved with their de-normalised image under
            ``<output_dir>/maps/<backbone>/`` for the leaderboard figures.

    Examples:
        >>> import tempfile
        >>> PerSampleWriter(tempfile.mkdtemp(), "synthetic", "synthetic/res_cnn").interval.on_batch
        True
    """

    def __init__(self, output_dir: Union[str, os.PathLike], dataset: str, backbone: str,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.dataset, self.backbone = Path(output_dir), str(dataset), str(backbone)
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        self._class_names: Optional[List[str]] = None  # the datamodule's, looked up at the first kept image

    def write_on_batch_end(self, trainer, pl_module, prediction: Sequence[Dict[str, Any]], batch_indices,
                           batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        root = self.output_dir / "per_sample" / safe_name(self.backbone)
        shard = current_shard(trainer, batch_idx, dataloader_idx, batch)
        name = f"shard_{shard:07d}" if shard is not None else \
            f"rank{trainer.global_rank}_batch_{dataloader_idx}_{batch_idx:07d}"
        if isinstance(batch, dict):  # the data report first: a shard counts as done only once its methods are written
            report = {"counts": {k: int(v) for k, v in (batch.get("counts") or {}).items()},
                      "skipped": [dict(s) for s in batch.get("skipped") or []]}
            atomic_write(root / "_data" / f"{name}.json",
                         lambda p: p.write_text(json.dumps(report, sort_keys=True, default=str)))
        by_method: Dict[str, List[Dict[str, Any]]] = {}
        for rec in prediction:
            by_method.setdefault(rec["method"], []).append(rec)
        for method, records in by_method.items():
            frame = records_to_frame(records, self.dataset, self.backbone)
            atomic_write(root / safe_name(method) / f"{name}.parquet", lambda p: frame.to_parquet(p, index=False))
            self._save_maps(records, batch, trainer)

    def _save_maps(self, records: Sequence[Dict[str, Any]], batch: Any, trainer: Any = None) -> None:
        """Save the kept maps, each kept image once, and next to the image its figure sidecar (sample id,
        explained class, prediction, the evidence of that class; :func:`benchmark.report.figure_labels.write_sidecar`)
        and once per folder the class names of the trainer's datamodule, when it names them."""
        folder = self.output_dir / "maps" / safe_name(self.backbone)
        for rec in records:
            if rec.get("saliency") is None:
                continue
            method_dir = folder / safe_name(rec["method"])
            method_dir.mkdir(parents=True, exist_ok=True)
            np.save(method_dir / f"{rec['index']}.npy", rec["saliency"].numpy().astype(np.float16))
            images = folder / "images"
            image_path, sidecar = images / f"{rec['index']}.npy", images / f"{rec['index']}.json"
            if not isinstance(batch, dict) or (image_path.exists() and sidecar.exists()):
                continue
            row = torch.as_tensor(batch["index"]).tolist().index(rec["index"])
            if not image_path.exists():
                image = (batch["image"][row].detach().float().cpu() * self.std + self.mean).clamp(0, 1)
                images.mkdir(parents=True, exist_ok=True)
                np.save(image_path, (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            if not sidecar.exists():
                self._save_sidecar(images, rec, batch, row, trainer)

    def _save_sidecar(self, images: Path, rec: Dict[str, Any], batch: Dict[str, Any], row: int, trainer: Any) -> None:
        """The figure sidecar of one kept image: the boxes (and the union of the masks) of the explained class."""
        if self._class_names is None:
            self._class_names = class_names_of(getattr(trainer, "datamodule", None)) or []
            if self._class_names and not (images / CLASSES_FILE).exists():
                write_class_names(images, self._class_names)
        target, boxes, mask = int(rec["target"]), None, None
        if batch.get("boxes") is not None and batch.get("box_labels") is not None:
            of_target = torch.as_tensor(batch["box_labels"][row]).cpu() == target
            boxes = torch.as_tensor(batch["boxes"][row]).detach().cpu().double()[of_target].numpy()
            if batch.get("masks") is not None:
                masks = torch.as_tensor(batch["masks"][row]).detach().cpu().bool()[of_target]
                mask = masks.any(dim=0).numpy() if len(masks) else np.zeros(batch["image"].shape[-2:], bool)
        labels, ids = batch.get("label"), batch.get("id")
        write_sidecar(images, rec["index"], sample_id=str(ids[row] if ids is not None else rec["index"]),
                      target=target, prediction=int(rec["prediction"]), probability=rec.get("probability"),
                      label=int(labels[row]) if isinstance(labels, torch.Tensor) else None, boxes=boxes, mask=mask)
