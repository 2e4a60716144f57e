"""Write every sample's metric values to Parquet, incrementally, per rank and per batch.

One file per (backbone, rank, batch): ``<out>/per_sample/<backbone>/rank<r>/batch_<dataloader>_<batch>.parquet``
(``/`` in the backbone name becomes ``--``; one run directory holds every backbone of a matrix), written
atomically at the end of each predict batch, so a crash loses at most the batch in flight and
nothing has to be gathered in memory. One row per (dataset index, backbone, method): ``dataset,
backbone, method, index, target, prediction, probability, target_probability, seconds`` and one
column per metric: the value the metric stored for that sample (``double``), or its vector of values
(``list<double>``) for metrics that store several per sample; NaN = undefined.
:func:`benchmark.results.read_per_sample` joins the files of all ranks, sorted by dataset index.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import pandas as pd
from pytorch_lightning.callbacks import BasePredictionWriter

__all__ = ["PER_SAMPLE_COLUMNS", "PerSampleWriter", "records_to_frame"]

#: The fixed columns of a per-sample row (metric columns follow).
PER_SAMPLE_COLUMNS = ("dataset", "backbone", "method", "index", "target", "prediction", "probability",
                      "target_probability", "seconds")


def records_to_frame(records: Sequence[Dict[str, Any]], dataset: str, backbone: str) -> pd.DataFrame:
    """Module records (see :mod:`benchmark.module`) as per-sample rows.

    Example:
        >>> rec = {"index": 3, "method": "gradcam", "target": 1, "prediction": 1, "probability": 0.9,
        ...        "target_probability": 0.9, "seconds": 0.01,
        ...        "metric_values": {"complexity": 12.5, "pointing_game": [1.0, 3.0, 0.0]}}
        >>> frame = records_to_frame([rec], "synthetic", "synthetic/res_cnn")
        >>> frame[["method", "index", "complexity", "pointing_game"]].to_dict("records")
        [{'method': 'gradcam', 'index': 3, 'complexity': 12.5, 'pointing_game': [1.0, 3.0, 0.0]}]
    """
    rows: List[Dict[str, Any]] = []
    for rec in records:
        row = {"dataset": dataset, "backbone": backbone, **{k: rec[k] for k in PER_SAMPLE_COLUMNS[2:]}}
        row.update({name: [float(v) for v in values] if isinstance(values, (list, tuple)) else float(values)
                    for name, values in rec.get("metric_values", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


class PerSampleWriter(BasePredictionWriter):
    """Save each predict batch's per-sample metric values as a Parquet file.

    Args:
        output_dir: run directory; files go to ``<output_dir>/per_sample/<backbone>/rank<r>/``.
        dataset: dataset name written in every row (e.g. ``"synthetic"``).
        backbone: backbone name written in every row.

    Example:
        >>> import tempfile
        >>> PerSampleWriter(tempfile.mkdtemp(), "synthetic", "synthetic/res_cnn").interval.on_batch
        True
    """

    def __init__(self, output_dir: Union[str, os.PathLike], dataset: str, backbone: str) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.dataset, self.backbone = Path(output_dir), str(dataset), str(backbone)

    def write_on_batch_end(self, trainer, pl_module, prediction: Sequence[Dict[str, Any]], batch_indices,
                           batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not prediction:  # every sample of the batch was skipped (on_error="skip")
            return
        folder = self.output_dir / "per_sample" / self.backbone.replace("/", "--") / f"rank{trainer.global_rank}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"batch_{dataloader_idx}_{batch_idx:07d}.parquet"
        tmp = path.with_suffix(".tmp")
        records_to_frame(prediction, self.dataset, self.backbone).to_parquet(tmp, index=False)
        os.replace(tmp, path)  # atomic: a crash never leaves half a file
