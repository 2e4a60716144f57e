"""Fixed-composition batches ("shards") shared out to the ranks: the unit of resume and of N-process identity.

Shard ``s`` is always the dataset positions ``[s * batch_size, (s + 1) * batch_size)`` (the last one
shorter; :func:`benchmark.runner.folder.shard_rows`), whatever the number of processes; rank ``r`` of
``world`` runs every ``world``-th unfinished shard, starting at its ``r``-th. Because every shard is
computed with the same batch on any rank, every per-sample value is bitwise the same on 1 or N processes
(a batch's composition changes convolution rounding at ~1e-7), and a re-run can skip the shards whose
results are on disk. Lightning's own distributed sampler would deal positions ``r::world`` and so change
the batches; the run therefore uses ``Trainer(use_distributed_sampler=False)`` with this batch sampler
(:meth:`CamDataModule.use_shards`).
"""
from __future__ import annotations

from typing import Any, Collection, Iterator, List, Mapping, Optional

from torch.utils.data import Sampler

from benchmark.runner.folder import num_shards, shard_rows  # the folder's owner defines what a shard holds

__all__ = ["ShardBatchSampler", "current_shard", "num_shards"]


class ShardBatchSampler(Sampler[List[int]]):
    """Yield this rank's fixed-composition batches of dataset positions, minus the ``skip`` shards.

    Args:
        size: number of dataset positions used (``0 .. size - 1``).
        batch_size: positions per shard.
        rank: this process's global rank.
        world_size: number of processes.
        skip: shard ids already finished (resume).

    Examples:
        >>> sampler = ShardBatchSampler(10, 4, rank=1, world_size=2)
        >>> list(sampler), sampler.shards
        ([[4, 5, 6, 7]], [1])
        >>> [list(ShardBatchSampler(10, 4, rank=r, world_size=2, skip={0})) for r in (0, 1)]  # a resume
        [[[4, 5, 6, 7]], [[8, 9]]]
    """

    def __init__(self, size: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 skip: Optional[Collection[int]] = None) -> None:
        if batch_size < 1 or size < 0 or not 0 <= rank < world_size:
            raise ValueError(f"Expected size >= 0, batch_size >= 1 and 0 <= rank < world_size, but got size={size}, "
                             f"batch_size={batch_size}, rank={rank}, world_size={world_size}.")
        self.size, self.batch_size = int(size), int(batch_size)
        skip = set(skip or ())
        #: the shard id of each batch this rank yields, in order (``batch_idx`` -> shard): the unfinished shards
        #: dealt round-robin, so a resume stays balanced (a rank may get none: fewer shards than processes)
        self.shards = [s for s in range(num_shards(size, batch_size)) if s not in skip][rank::world_size]

    def __iter__(self) -> Iterator[List[int]]:
        for shard in self.shards:
            yield list(shard_rows(shard, self.batch_size, self.size))

    def __len__(self) -> int:
        return len(self.shards)


def current_shard(trainer, batch_idx: int, dataloader_idx: int = 0, batch: Any = None) -> Optional[int]:
    """The shard id of predict batch ``batch_idx``, or ``None`` when the loader does not use shards: the
    batch's own ``"shard"`` (streams, :mod:`datamodules.stream_shards`), else the shard sampler's.

    Examples:
        >>> current_shard(None, 0) is None, current_shard(None, 0, batch={"shard": 7})
        (True, 7)
    """
    if isinstance(batch, Mapping) and "shard" in batch:
        return int(batch["shard"])
    loaders = getattr(trainer, "predict_dataloaders", None)
    if loaders is None:
        return None
    loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
    sampler = getattr(loader, "batch_sampler", None)
    sampler = getattr(sampler, "_batch_sampler", sampler)  # Lightning wraps predict batch samplers
    return sampler.shards[batch_idx] if isinstance(sampler, ShardBatchSampler) else None
