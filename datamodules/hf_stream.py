"""Hugging Face ``datasets`` streaming: hub datasets (``imagenet-1k``) or local Parquet / image folders.

``load_dataset(path, split=..., streaming=True)`` is read row by row (nothing holds the whole set
in memory). Images are decoded here, not by ``datasets`` (``Image(decode=False)``), so an
unreadable image follows ``on_error`` instead of ending the stream.

Global index: a sample's ``index`` is its position in the full, unsplit stream, for any number of
processes and workers. ``.map(with_indices=True)`` does not give it: ``datasets`` 5.2 restarts
that counter in every shard subset handed to a rank or a worker. Instead the shards (a streamed
Parquet dataset's files, in order) get offsets from their Parquet footers' row counts, and a
``from_generator`` stream with one source per shard tags each row with ``offset + row``; the tag
travels with the row through ``split_dataset_by_node`` and worker sharding, however they split.
Rows are re-counted while read; a count that disagrees with the footer raises. A source without
footers (image folder, Arrow, JSON, tar) is one logical shard counted in order: correct, but each
rank reads the whole stream, with one worker (any hub dataset has a Parquet copy at
``revision="refs/convert/parquet"``).

Splitting (Lightning injects no sampler for an ``IterableDataset``): ``split_dataset_by_node``
with the trainer's rank and world size gives whole shards to ranks when ``world_size`` divides the
number of shards; otherwise each rank reads all shards and keeps every ``world_size``-th example.
A rank's shards are then dealt to its DataLoader workers (each keeping its ``world_size``-th
examples of its own shards -- a partition when all ranks run as many workers, as the datamodule
does); ``num_workers`` is capped at the rank's number of shards (logged), since a worker without
a shard idles. ``limit`` keeps the first ``limit`` rows of the full stream (before splitting).

Boxes: ``annotations`` maps an image id to ``(boxes, box_labels)`` (``(N, 4)`` xyxy, original pixels): a
``Mapping``, a callable returning ``None`` for an image without boxes (both taken as given), or the path of a
Kaggle ``LOC_val_solution.csv`` or ILSVRC XML directory, read with ``synset_mapping`` into an
:class:`~datamodules.imagenet_annotations.ImageNetAnnotations` (box labels in the mapping's line order: the
sorted-synset order of the hub ``imagenet-1k`` labels) and checked as :class:`~datamodules.imagenet.ImageNetVal`
does (:meth:`~datamodules.imagenet_annotations.ImageNetAnnotations.checked`): an image of another size than the
XML ``<size>``, or whose label (label column) or name's synset is not its boxes' class, is an ``AnnotationError``
(``on_error="skip"``: skipped, counted). The id is the ``id_column`` value, else the base name of the image's
path (hub ``imagenet-1k`` validation: ``ILSVRC2012_val_00000001_n01751748.JPEG``), else
``f"{split}_{index:08d}"``; a miss retries it without its extension, then without a trailing ``_n<8 digits>``
(:func:`~datamodules.imagenet_annotations.image_id_candidates`). The first miss is logged; all are counted.
"""
from __future__ import annotations

import glob
import hashlib
import io
import itertools
import json
import logging
import os
from functools import partial
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from datasets.utils.file_utils import xopen
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset

from benchmark.runtime.preprocessing import Preprocessing
from datamodules.base import ON_ERROR, CamDataModule, as_preprocessing, check_choice, check_positive_int
from datamodules.errors import AnnotationError
from datamodules.imagenet_annotations import (
    ImageNetAnnotations,
    PathLike,
    check_annotation_paths,
    image_id_candidates,
    is_annotation_path,
)
from datamodules.images import CorruptImageError, to_rgb
from datamodules.sample import collate_samples, make_sample, skipped_sample
from datamodules.stream_shards import INDEX as _INDEX
from datamodules.stream_shards import StreamShards, parquet_shard_sizes
from datamodules.stream_shards import stream_rows as _generate

__all__ = ["HFStream", "HFStreamDataModule", "check_local_files", "decode_image", "parquet_shard_sizes"]

log = logging.getLogger(__name__)

Annotations = Union[Mapping[str, Any], Callable[[str], Any], str, os.PathLike, None]
DataFiles = Union[str, Sequence[str], Mapping[str, Union[str, Sequence[str]]], None]
PreprocessingLike = Union[Preprocessing, Mapping[str, Any], str, None]


def _is_remote(path: str) -> bool:
    return "://" in path or "::" in path


def check_local_files(path: str, data_files: DataFiles = None, data_dir: Optional[str] = None) -> None:
    """Raise ``FileNotFoundError`` (saying how to fix it) when local inputs are missing.

    ``data_files``/``data_dir`` are local only for a packaged builder (``"parquet"``,
    ``"imagefolder"``, ...) or a local ``path``; for a hub dataset they name files in the repo.

    Examples:
        >>> check_local_files("parquet", data_files="/no/such/dir/*.parquet")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: No file matches data_files '/no/such/dir/*.parquet'. ...
    """
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    path = os.path.expanduser(path)
    local_dir = os.path.isdir(path)
    if not local_dir and path.startswith((os.sep, ".")):
        raise FileNotFoundError(f"Dataset directory {path!r} does not exist. Pass an existing directory, a hub "
                                "dataset id, or a builder such as path='parquet' with data_files=[...].")
    if path not in _PACKAGED_DATASETS_MODULES and not local_dir:
        return  # hub dataset: data_files / data_dir are paths inside the repo
    root = path if local_dir else ""
    if data_dir is not None and not _is_remote(data_dir) and not os.path.isdir(os.path.join(root, data_dir)):
        raise FileNotFoundError(f"data_dir {data_dir!r} is not a directory. For path='imagefolder' pass the folder "
                                "holding <split>/<class>/<image> (or <class>/<image>) files.")
    patterns = data_files.values() if isinstance(data_files, Mapping) else [data_files]
    for group in patterns:
        for pattern in [group] if isinstance(group, str) or group is None else group:
            if pattern is None or _is_remote(pattern):
                continue
            full = os.path.join(root, data_dir or "", os.path.expanduser(pattern))
            if not glob.glob(full, recursive=True):
                raise FileNotFoundError(f"No file matches data_files {pattern!r}. Write the files there or pass "
                                        "data_files=<existing file, list or glob>, e.g. 'data/val-*.parquet'.")
    if not local_dir and data_files is None and data_dir is None:
        raise FileNotFoundError(f"path={path!r} needs data_files=[...] or data_dir=... naming the local files.")


def decode_image(value: Any, sample_id: str = "<image>") -> Image.Image:
    """Decode an Arrow image struct (``{"bytes", "path"}``; the path is read when bytes are missing) or bytes to RGB.

    Raises:
        CorruptImageError: the data cannot be read or decoded (the message names ``sample_id``).

    Examples:
        >>> data = io.BytesIO()
        >>> Image.new("LA", (3, 2)).save(data, "PNG")
        >>> decode_image({"bytes": data.getvalue(), "path": "a.png"}).mode
        'RGB'
        >>> decode_image({"bytes": b"junk", "path": None}, "a.png")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        datamodules.images.CorruptImageError: Cannot decode image 'a.png': cannot identify image file ...
    """
    data, path = (value.get("bytes"), value.get("path")) if isinstance(value, Mapping) else (value, None)
    hint = "Pass on_error='skip' to skip unreadable images (they are counted and listed in the results)."
    try:
        if data is None and path:
            with xopen(path, "rb") as handle:
                data = handle.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CorruptImageError(f"Cannot decode image {sample_id!r}: no image bytes or path ({value!r:.80}).")
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb(image, sample_id)
    except CorruptImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"Cannot decode image {sample_id!r}: {err}. {hint}") from err


def _parse_annotation(value: Any, sample_id: str) -> Dict[str, Any]:
    """``(boxes, box_labels[, difficult])``, ``{"boxes", "box_labels"/"labels"[, "difficult"]}`` or ``None``."""
    if isinstance(value, Mapping):
        value = (value.get("boxes"), value.get("box_labels", value.get("labels")), value.get("difficult"))
    if value is None:
        value = ([], [])
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise AnnotationError(f"Annotation of {sample_id!r}: expected (boxes, box_labels) or a dict with `boxes` "
                              f"and `box_labels`, but got {type(value).__name__}.")
    boxes, labels, difficult = (*value, None)[:3]
    try:
        boxes = torch.as_tensor(boxes if boxes is not None else [], dtype=torch.float64)
        labels = [int(label) for label in (labels if labels is not None else [])]
    except (TypeError, ValueError, RuntimeError) as err:
        raise AnnotationError(f"Annotation of {sample_id!r}: unreadable boxes or labels ({err}).") from err
    boxes = boxes.reshape(0, 4) if boxes.numel() == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(labels) != len(boxes):
        raise AnnotationError(f"Annotation of {sample_id!r}: expected (N, 4) boxes and N labels, but got boxes of "
                              f"shape {tuple(boxes.shape)} and {len(labels)} labels.")
    return {"boxes": boxes, "box_labels": labels, **({} if difficult is None else {"difficult": list(difficult)})}


class HFStream(IterableDataset):
    """A streamed ``datasets`` split as contract samples (see :mod:`datamodules.sample`).

    Args:
        path: hub dataset id (``"ILSVRC/imagenet-1k"``), local directory, or builder
            (``"parquet"`` with ``data_files``, ``"imagefolder"`` with ``data_dir``).
        split: split name (``"validation"``, ``"train"``, ...).
        name, data_files, data_dir, revision: passed to ``datasets.load_dataset``.
        image_column, label_column, id_column: column names; ``label_column=None`` gives label -1
            (use ``target="prediction"``); ``id_column=None`` takes the id from the image path.
        annotations: image id -> ``(boxes, box_labels)`` mapping or callable, or the path of a Kaggle
            ``LOC_val_solution.csv`` or an ILSVRC XML directory (module docstring: ids; checks of a path).
        synset_mapping: ``LOC_synset_mapping.txt`` (its line order gives the box labels) with a path ``annotations``.
        preprocessing: the backbone's preprocessing (see :func:`~datamodules.base.as_preprocessing`).
        limit: keep the first ``limit`` examples of the full stream.
        on_error: ``"raise"`` or ``"skip"`` unreadable images and malformed annotations.
        rank, world_size: this process's part of the stream (``split_dataset_by_node``).

    Examples:
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> png = io.BytesIO()
        >>> Image.new("L", (8, 6), 128).save(png, "PNG")
        >>> rows = {"image": [{"bytes": png.getvalue(), "path": f"{i}.png"} for i in range(3)], "label": [4, 5, 6]}
        >>> table = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
        >>> _ = table.to_parquet(f"{folder.name}/part-0.parquet")
        >>> stream = HFStream("parquet", "train", data_files=f"{folder.name}/*.parquet", preprocessing={"crop_size": 4})
        >>> [(s["index"], s["id"], s["label"], tuple(s["image"].shape)) for s in stream]
        [(0, '0.png', 4, (3, 4, 4)), (1, '1.png', 5, (3, 4, 4)), (2, '2.png', 6, (3, 4, 4))]
        >>> folder.cleanup()
    """

    def __init__(self, path: str, split: str = "validation", *, name: Optional[str] = None,
                 data_files: DataFiles = None, data_dir: Optional[str] = None, revision: Optional[str] = None,
                 image_column: str = "image", label_column: Optional[str] = "label", id_column: Optional[str] = None,
                 annotations: Annotations = None, synset_mapping: Optional[PathLike] = None,
                 preprocessing: PreprocessingLike = None, limit: Optional[int] = None, on_error: str = "raise",
                 rank: int = 0, world_size: int = 1) -> None:
        self.preprocessing = as_preprocessing(preprocessing)
        self.transform = self.preprocessing.transform()
        self.on_error = check_choice(on_error, "on_error", ON_ERROR)
        self.limit = None if limit is None else check_positive_int(limit, "limit")
        world_size = check_positive_int(world_size, "world_size")
        if check_positive_int(rank, "rank", allow_zero=True) >= world_size:
            raise ValueError(f"Expected `rank` in [0, {world_size}), but got {rank}.")
        if is_annotation_path(annotations, synset_mapping):
            annotations = ImageNetAnnotations(annotations, synset_mapping)  # type: ignore[arg-type]
        elif annotations is not None and not (isinstance(annotations, Mapping) or callable(annotations)):
            raise TypeError(f"Expected `annotations` to be a mapping image id -> (boxes, box_labels), a callable, a "
                            f"path or None, but got {type(annotations).__name__}.")
        self.split, self.annotations = split, annotations
        self._logged_miss = False  # the first image without an annotation entry is logged, once
        self.image_column, self.label_column, self.id_column = image_column, label_column, id_column
        check_local_files(path, data_files, data_dir)
        raw = datasets.load_dataset(path, name=name, split=split, data_files=data_files, data_dir=data_dir,
                                    revision=revision, streaming=True)
        sizes = parquet_shard_sizes(raw)  # before select/cast, which wrap the Parquet source
        files = [str(f) for f in getattr(raw._ex_iterable, "kwargs", {}).get("files") or []]
        columns = [c for c in dict.fromkeys((image_column, label_column, id_column)) if c is not None]
        if raw.column_names is not None:
            self._check_columns(raw.column_names)
            raw = raw.select_columns(columns)
        if isinstance((raw.features or {}).get(image_column), datasets.Image):
            raw = raw.cast_column(image_column, datasets.Image(decode=False))
        #: the source rows (selected columns, images undecoded) and the rows per Parquet file (None: no footers)
        self.base, self.sizes = raw, sizes
        self.source = {"path": path, "name": name, "split": split, "revision": revision, "files": files,
                       "rows": sizes, "limit": self.limit}
        specs: List[Tuple[Optional[int], int, Optional[int]]] = [(None, 0, None)]
        if sizes is not None:
            offsets = [0, *itertools.accumulate(sizes)][:-1]
            specs = [(i, offsets[i], sizes[i]) for i in range(len(sizes)) if self.limit is None or offsets[i] < limit]
            self.num_examples: Optional[int] = min(sum(sizes), self.limit or sum(sizes))
            if not specs or not self.num_examples:
                raise ValueError(f"The {split!r} split of {path!r} has no rows.")
        else:
            self.num_examples = None
        stream = datasets.IterableDataset.from_generator(partial(_generate, base=raw, limit=self.limit),
                                                         gen_kwargs={"specs": specs})
        self.stream = split_dataset_by_node(stream, rank=rank, world_size=world_size) if world_size > 1 else stream

    @property
    def num_shards(self) -> int:
        """Shards this rank reads: at most this many DataLoader workers get work."""
        return self.stream.num_shards

    def _check_columns(self, available: Sequence[str]) -> None:
        for kind in ("image", "label", "id"):
            column = getattr(self, f"{kind}_column")
            if column is not None and column not in available:
                raise ValueError(f"Unknown {kind}_column {column!r}; the {self.split!r} split has columns "
                                 f"{sorted(available)}.")

    def _lookup(self, sample_id: str, image: Image.Image, label: int) -> Any:
        """The annotation of ``sample_id`` (an ImageNet file's is checked against the image), ``None``: no entry."""
        keys = [key for key, _ in image_id_candidates(sample_id)]
        if isinstance(self.annotations, ImageNetAnnotations):
            value = self.annotations.checked(sample_id, image.size, label)
        else:
            get = self.annotations.get if isinstance(self.annotations, Mapping) else self.annotations
            value = next((found for found in map(get, keys) if found is not None), None)
        if value is None and not self._logged_miss:
            self._logged_miss = True
            log.warning("No annotation entry for image %r (looked up as %s): counted in images_without_boxes. If "
                        "most images miss, pass id_column= or annotations keyed by the stream's ids.", sample_id, keys)
        return value

    def sample(self, example: Mapping[str, Any]) -> Dict[str, Any]:
        """One streamed row (with its index tag) -> a contract sample, or a skipped marker."""
        self._check_columns([key for key in example if key != _INDEX])  # features unknown before reading
        index, value = int(example[_INDEX]), example[self.image_column]
        path = value.get("path") if isinstance(value, Mapping) else None
        if self.id_column is not None:
            sample_id = str(example[self.id_column])
        elif path:
            sample_id = os.path.basename(str(path).split("::")[0].rstrip("/"))
        else:
            sample_id = f"{self.split}_{index:08d}"
        label = -1 if self.label_column is None or example[self.label_column] is None else example[self.label_column]
        try:
            image = decode_image(value, sample_id)
            boxes = {} if self.annotations is None else _parse_annotation(self._lookup(sample_id, image, int(label)),
                                                                          sample_id)
            return make_sample(image, self.preprocessing, self.transform, label=int(label), index=index,
                               sample_id=sample_id, **boxes)
        except (CorruptImageError, AnnotationError) as err:
            if self.on_error == "raise":
                raise
            return skipped_sample(index, sample_id, err)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for example in self.stream:  # in a DataLoader worker, `datasets` deals this rank's shards to workers
            yield self.sample(example)


class HFStreamDataModule(CamDataModule):
    """Predict datamodule over :class:`HFStream`, split across the trainer's processes.

    Args:
        path, split, name, data_files, data_dir, revision, image_column, label_column, id_column,
            annotations, synset_mapping, limit: see :class:`HFStream`; ``annotations`` is saved as a
            hyperparameter only when it is a path.
        preprocessing, batch_size, num_workers, on_error: see :class:`~datamodules.base.CamDataModule`;
            ``num_workers`` is capped at the number of shards each rank reads (logged).

    ``setup`` takes the rank and world size from the attached trainer (rank 0 of 1 without one).

    Examples:
        >>> dm = HFStreamDataModule("imagefolder", data_dir="/no/such/folder")
        >>> dm.prepare_data()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: data_dir '/no/such/folder' is not a directory. ...
    """

    def __init__(self, path: str, split: str = "validation", name: Optional[str] = None,
                 data_files: DataFiles = None, data_dir: Optional[str] = None, revision: Optional[str] = None,
                 image_column: str = "image", label_column: Optional[str] = "label", id_column: Optional[str] = None,
                 annotations: Annotations = None, synset_mapping: Optional[PathLike] = None,
                 limit: Optional[int] = None, preprocessing: PreprocessingLike = None, batch_size: int = 32,
                 num_workers: int = 0, on_error: str = "raise") -> None:
        super().__init__(preprocessing, batch_size, num_workers, on_error)
        if limit is not None:
            check_positive_int(limit, "limit")
        self._annotations_is_path = is_annotation_path(annotations, synset_mapping)
        # a path is a fine hyperparameter; a full box table (mapping or callable) does not belong there
        self.save_hyperparameters(ignore=[] if self._annotations_is_path else ["annotations"])
        self.annotations = annotations

    def provides(self) -> FrozenSet[str]:
        return frozenset({"boxes"}) if self.annotations is not None else frozenset()

    def check_files(self) -> None:
        hp = self.hparams
        check_local_files(hp.path, hp.data_files, hp.data_dir)
        if self._annotations_is_path:
            check_annotation_paths(hp.annotations, hp.synset_mapping)

    def build_dataset(self) -> HFStream:
        hp = self.hparams
        rank, world_size = self.rank_and_world()
        return HFStream(hp.path, hp.split, name=hp.name, data_files=hp.data_files, data_dir=hp.data_dir,
                        revision=hp.revision, image_column=hp.image_column, label_column=hp.label_column,
                        id_column=hp.id_column, annotations=self.annotations, synset_mapping=hp.synset_mapping,
                        preprocessing=self.preprocessing, limit=hp.limit, on_error=self.on_error, rank=rank,
                        world_size=world_size)

    def used_size(self) -> Optional[int]:
        """Rows the predict loop covers: the footers' count (after ``limit`` and ``use_shards(limit=...)``),
        ``None`` for a source without footers."""
        if self.dataset is None:
            self.setup("predict")
        n, limit = self.dataset.num_examples, (self._shards or {}).get("limit")
        return n if n is None or limit is None else min(n, limit)

    def subset_fingerprint(self) -> Dict[str, Any]:
        """``{"n", "ids_sha256"}`` for the run's fingerprint: the row count and a hash of the source (path, name,
        split, revision, files and their row counts, limit) -- reading every id would mean reading the stream."""
        text = json.dumps({**self.dataset.source, "used": self.used_size()}, sort_keys=True, default=str)
        return {"n": self.used_size(), "ids_sha256": hashlib.sha256(text.encode()).hexdigest()}

    def predict_dataloader(self) -> DataLoader:
        if self._shards is not None and self.dataset.sizes is not None:  # resumable, N-process identical
            shards = StreamShards(self.dataset, self.used_size(), self.batch_size, *self.rank_and_world(),
                                  self._shards["skip"])
            return DataLoader(shards, num_workers=min(self.num_workers, len(shards.shards)), **shards.loader_kwargs())
        if self._shards is not None:
            log.warning("%s has no Parquet footers (row counts): this run cannot resume or split into fixed shards; "
                        "an interrupted backbone is recomputed from the start. Use Parquet files (any hub dataset "
                        "has a copy at revision='refs/convert/parquet') to resume.", self.hparams.path)
        workers = min(self.num_workers, self.dataset.num_shards)
        if workers < self.num_workers:
            log.warning("Using %d DataLoader workers instead of %d: this rank reads %d shard(s) of the stream, and a "
                        "worker without a shard would idle. Use more Parquet shards for more workers.",
                        workers, self.num_workers, self.dataset.num_shards)
        return DataLoader(self.dataset, batch_size=self.batch_size, num_workers=workers, collate_fn=collate_samples)
