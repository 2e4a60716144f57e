"""Fixed-composition shards of a stream whose row count is known (Parquet footers): resume and N-process
identity for :class:`~datamodules.hf_stream.HFStream`, as :class:`~datamodules.shards.ShardBatchSampler`
gives them to map-style datasets.

Shard ``s`` is the global rows ``[s * batch_size, (s + 1) * batch_size)`` of the stream, as for map-style
data. The shards still to compute are cut into contiguous blocks, one per rank, and each rank's block into
one per DataLoader worker, so a worker reads only the Parquet files that hold its rows (rows of other
shards in a file it reads are skipped undecoded). A worker yields each shard as one collated batch
carrying ``batch["shard"]`` (:func:`datamodules.shards.current_shard` reads it), whatever the order in
which the DataLoader interleaves its workers.
"""
from __future__ import annotations

import bisect
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Collection, Dict, Iterator, List, Optional, Sequence, Tuple

import datasets
import pyarrow.parquet as pq
from datasets.utils.file_utils import xopen
from torch.utils.data import IterableDataset, get_worker_info

from benchmark.runner.folder import num_shards, shard_rows
from datamodules.sample import collate_samples

__all__ = ["INDEX", "StreamShards", "blocks", "parquet_shard_sizes", "rows_in", "stream_rows"]

#: the column that carries each row's global index through ``datasets``' splitting
INDEX = "__cam_bench_index__"
_READ_BATCH = 32  # rows read from the source at a time


def parquet_shard_sizes(stream: datasets.IterableDataset) -> Optional[List[int]]:
    """Rows per shard of a freshly loaded streamed Parquet dataset (footers only), else ``None``.

    ``None`` when the stream is not plain Parquet files read whole and unfiltered in file order
    (another format, ``filters``, ``on_bad_files``, row-group sub-shards). Reads the private
    ``_ex_iterable`` of ``datasets`` 5.x, checked and with this safe fallback.
    """
    source = stream._ex_iterable
    fn = getattr(source, "generate_tables_fn", None)
    config = getattr(getattr(fn, "__self__", None), "config", None)
    kwargs = getattr(source, "kwargs", {})
    files, row_groups = kwargs.get("files"), kwargs.get("row_groups_list")
    if (type(config).__name__ != "ParquetConfig" or getattr(config, "filters", None) is not None
            or getattr(config, "on_bad_files", "error") != "error" or not isinstance(files, list)
            or len(files) != stream.num_shards or any(group is not None for group in row_groups or [])):
        return None

    def rows(file: str) -> int:
        with xopen(file, "rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(files)))) as pool:
        return list(pool.map(rows, files))


def stream_rows(specs: Sequence[Tuple[Optional[int], int, Optional[int]]], base: datasets.IterableDataset,
                limit: Optional[int]) -> Iterator[Dict[str, Any]]:
    """Rows of the ``base`` shards in ``specs`` (``(shard or None for all, offset, rows)``), tagged with their index."""
    for shard, offset, size in specs:
        part = base if shard is None else base.shard(num_shards=base.num_shards, index=shard)
        row, stop = 0, None if limit is None else limit - offset
        # `.iter` (unlike `iter(part)`) does not re-shard by DataLoader worker: this runs inside one
        for batch in part.iter(batch_size=_READ_BATCH):
            for values in zip(*batch.values()):
                if stop is not None and row >= stop:
                    return
                yield {**dict(zip(batch, values)), INDEX: offset + row}
                row += 1
        if size is not None and row != size:
            raise RuntimeError(f"Shard {shard} of the stream has {row} rows but its Parquet footer says {size}; "
                               "the global sample indices would be wrong.")


def rows_in(base: datasets.IterableDataset, sizes: Sequence[int], ranges: Sequence[Tuple[int, int]],
            limit: Optional[int] = None) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(global index, row)`` for the rows of ``base`` in ``ranges`` (ascending ``[start, stop)`` positions),
    reading only the Parquet shards (files) that hold them, each only up to the last row needed.

    Examples:
        >>> base = datasets.Dataset.from_dict({"x": list(range(7))}).to_iterable_dataset(num_shards=3)
        >>> sizes = [3, 2, 2]  # rows per shard
        >>> [(i, row["x"]) for i, row in rows_in(base, sizes, [(1, 2), (5, 7)])]
        [(1, 1), (5, 5), (6, 6)]
    """
    starts = [start for start, _ in ranges]
    offset = 0
    for shard, size in enumerate(sizes):
        first = bisect.bisect_right(starts, offset + size - 1)  # ranges starting in or before this shard
        needed = [stop for start, stop in ranges[:first] if stop > offset]
        if needed:
            stop = min(max(needed), offset + size if limit is None else min(limit, offset + size))
            for row in stream_rows([(shard, offset, size if stop == offset + size else None)], base, stop):
                index = row[INDEX]
                k = bisect.bisect_right(starts, index) - 1
                if k >= 0 and index < ranges[k][1]:
                    yield index, row
        offset += size


def blocks(items: Sequence[int], parts: int) -> List[List[int]]:
    """``items`` cut into ``parts`` contiguous blocks whose lengths differ by at most one (earlier ones longer).

    Examples:
        >>> blocks([0, 1, 2, 3, 4], 3), blocks([7], 2)
        ([[0, 1], [2, 3], [4]], [[7], []])
    """
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for part in range(parts):
        stop = start + size + (part < extra)
        out.append(list(items[start:stop]))
        start = stop
    return out


def _identity(batch: Any) -> Any:
    return batch


class StreamShards(IterableDataset):
    """This rank's unfinished shards of a sized stream, each yielded as one collated batch.

    Args:
        stream: an :class:`~datamodules.hf_stream.HFStream` whose Parquet row counts are known
            (``stream.sizes``; its ``base`` rows are turned into samples by ``stream.sample``).
        size: global rows used (``min(num_examples, limit)``).
        batch_size: rows per shard.
        rank, world_size: this process's share.
        skip: finished shard ids (resume).
    """

    def __init__(self, stream: Any, size: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 skip: Collection[int] = ()) -> None:
        self.stream, self.size, self.batch_size = stream, int(size), int(batch_size)
        todo = [s for s in range(num_shards(self.size, self.batch_size)) if s not in set(skip)]
        #: the shard ids this rank computes, in order
        self.shards = blocks(todo, world_size)[rank]

    def worker_shards(self) -> List[int]:
        """The shards of this DataLoader worker (all of the rank's without workers)."""
        info = get_worker_info()
        return self.shards if info is None else blocks(self.shards, info.num_workers)[info.id]

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        wanted = self.worker_shards()
        if not wanted:
            return
        rows = {s: shard_rows(s, self.batch_size, self.size) for s in wanted}
        lengths = {s: len(r) for s, r in rows.items()}
        pending: Dict[int, List[Dict[str, Any]]] = {}
        ranges = [(r.start, r.stop) for r in rows.values()]
        for index, example in rows_in(self.stream.base, self.stream.sizes, ranges, self.size):
            shard = index // self.batch_size
            if shard not in lengths:
                continue
            pending.setdefault(shard, []).append(self.stream.sample(example))
            if len(pending[shard]) == lengths[shard]:
                batch = collate_samples(pending.pop(shard))
                batch["shard"] = shard
                yield batch
        if pending:
            raise RuntimeError(f"The stream ended before shards {sorted(pending)} were complete; the Parquet footers' "
                               "row counts disagree with the rows read.")

    def loader_kwargs(self) -> Dict[str, Any]:
        """``DataLoader`` arguments: batches are made here (``batch_size=None``), passed through unchanged."""
        return {"batch_size": None, "collate_fn": _identity}
