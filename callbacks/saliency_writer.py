"""Write the predict loop's records to disk, per rank and per batch.

Modelled on Lightning's ``BasePredictionWriter``: with ``strategy="ddp"`` each process writes
its own batches (``rank<r>/batch_<dataloader>_<batch>.pt``), so nothing has to be gathered in
memory and a crash loses at most the batch in flight. :func:`read_records` joins the files of
all ranks back into one list sorted by dataset index (duplicates refused), identical whatever
the number of processes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from benchmark.runtime.module import merge_records

__all__ = ["SaliencyWriter", "read_records"]


class SaliencyWriter(BasePredictionWriter):
    """Save each predict batch's records with ``torch.save``.

    Args:
        output_dir: directory created if needed; one sub-directory per global rank.

    Examples:
        >>> import tempfile
        >>> writer = SaliencyWriter(tempfile.mkdtemp())
        >>> writer.interval.on_batch
        True
    """

    def __init__(self, output_dir: Union[str, os.PathLike]) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction: Sequence[Dict[str, Any]], batch_indices,
                           batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        folder = self.output_dir / f"rank{trainer.global_rank}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"batch_{dataloader_idx}_{batch_idx:07d}.pt"
        torch.save(list(prediction), path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)  # atomic: a crash never leaves half a file


def read_records(output_dir: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """All records written by :class:`SaliencyWriter`, sorted by (index, method).

    Raises:
        FileNotFoundError: no record file under ``output_dir``.
        ValueError: an (index, method) pair was written twice.
    """
    files = sorted(Path(output_dir).glob("rank*/batch_*.pt"))
    if not files:
        raise FileNotFoundError(f"No record files (rank*/batch_*.pt) under {str(output_dir)!r}; "
                                "run Trainer.predict with callbacks=[SaliencyWriter(output_dir)] first.")
    return merge_records(torch.load(f, weights_only=True) for f in files)
