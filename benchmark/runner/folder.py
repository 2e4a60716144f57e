"""The run folder's one owner: lock, fingerprint, overwrite, shard inventory, completeness, provenance, atomic writes.

Every guarantee about a run directory lives here, used by the run (:mod:`benchmark.runner.run`), the
Parquet writer (:mod:`callbacks.per_sample_writer`) and the leaderboard (:mod:`benchmark.report.leaderboard`):

* **one writer**: :func:`folder_lock` (from :mod:`benchmark.runner.sharing`, with the ready handshake of
  torchrun / srun ranks and :func:`atomic_write`; re-exported here) holds ``<out>/.cam-bench.lock`` from
  before anything is written until the run ends;
* **never mixed**: :func:`prepare` refuses a folder whose fingerprint (everything that changes a number)
  differs, naming each field and both values; :func:`check_backbone` refuses a backbone whose target
  layers or weights (SHA-256 of the state dict) differ from those recorded;
* **overwrite removes only what a run wrote**, and only in a folder holding a ``run.json``;
* **provenance stays with the rows**: each attempt opens an entry (versions, commit, date) in
  ``run.json["provenance"]`` before it computes, together with the backbone's weights hash, and fills in the
  shards it wrote when it ends; the shards of an attempt killed before that are given to its entry (marked
  ``killed``) by the next attempt, so every shard on disk is listed; an attempt that wrote none leaves no entry;
* **the settings on record are the results'**: :func:`record_config` rewrites ``config.yaml`` only after
  every check passed (the run builds each recorded backbone to compare its weights hash first);
* **completeness**: :func:`finished_shards` (what a resume skips) and :func:`run_gaps` (what a leaderboard
  marks incomplete) read the same files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import pandas as pd
import torch
from torch import nn

from benchmark.runner.sharing import (  # noqa: F401  (re-exported: the folder's one entry point)
    LOCK_NAME,
    READY_NAME,
    FolderLocked,
    SettingsDiffer,
    announce_ready,
    atomic_write,
    await_ready,
    folder_lock,
    launch_token,
    parquet_readable,
    write_json,
)
from benchmark.runner.versions import environment, package_versions
from benchmark.runtime.preprocessing import recorded_preprocessing  # also the reports' (they import no runtime)

__all__ = ["FolderLocked", "LOCK_NAME", "READY_NAME", "SettingsDiffer", "announce_ready", "atomic_write",
           "await_ready", "backbone_complete", "check_backbone", "discard_unsharded", "discard_unused",
           "finished_shards", "fingerprint_diff", "folder_lock", "incomplete", "launch_token", "num_shards",
           "open_attempt", "prepare", "record_backbone", "record_config", "recorded_preprocessing", "run_gaps",
           "safe_name",
           "shard_rows", "weights_hash", "write_json"]

log = logging.getLogger("cam_bench.run")


def safe_name(name: str) -> str:
    """A backbone or method name as a folder name (``/`` and ``:`` become ``--``).

    Examples:
        >>> safe_name("synthetic/res_cnn"), safe_name("my_cam.py:MyCAM")
        ('synthetic--res_cnn', 'my_cam.py--MyCAM')
    """
    return re.sub(r"[^A-Za-z0-9._+-]+", "--", str(name))


def num_shards(size: int, batch_size: int) -> int:
    """Number of shards of ``size`` samples.

    Examples:
        >>> num_shards(10, 4), num_shards(8, 4), num_shards(0, 4)
        (3, 2, 0)
    """
    return -(-int(size) // int(batch_size))


def shard_rows(shard: int, batch_size: int, size: int) -> range:
    """The dataset positions (global rows of a stream) of ``shard``: ``[shard * batch_size, (shard + 1) *
    batch_size)``, the last shard shorter -- on any number of processes, so results do not depend on them.

    Examples:
        >>> list(shard_rows(2, 4, 10))
        [8, 9]
    """
    return range(shard * batch_size, min((shard + 1) * batch_size, size))


def finished_shards(output_dir: Union[str, os.PathLike], backbone: str, method: str) -> Set[int]:
    """Shard ids whose per-sample file for (``backbone``, ``method``) is on disk and readable (what a resume skips;
    an unreadable file is recomputed and replaced, with a warning).

    Examples:
        >>> import tempfile
        >>> finished_shards(tempfile.mkdtemp(), "synthetic/res_cnn", "gradcam")
        set()
    """
    folder = Path(output_dir) / "per_sample" / safe_name(backbone) / safe_name(method)
    return {int(p.stem.split("_")[1]) for p in folder.glob("shard_*.parquet") if parquet_readable(p)}


def backbone_complete(out: Path, backbone: str) -> bool:
    """Whether an attempt finished ``backbone``'s predict loop (recorded by :func:`record_backbone`): the
    completeness of a stream without row counts, which has no shards to count."""
    path = out / "run.json"
    return path.is_file() and bool(json.loads(path.read_text())["backbones"].get(backbone, {}).get("complete"))


def discard_unsharded(out: Path, backbone: str) -> None:
    """Remove the per-rank files an interrupted attempt wrote for ``backbone`` without shards (a stream without
    row counts cannot resume within a backbone: it is recomputed, and its old rows must not be counted twice)."""
    folder = out / "per_sample" / safe_name(backbone)
    stale = sorted(folder.glob("*/rank*_batch_*.parquet")) + sorted(folder.glob("_data/rank*_batch_*.json"))
    if stale:
        log.warning("%s: removing %d per-sample files of an interrupted attempt (no shards to resume from)", backbone,
                    len(stale))
    for path in stale:
        path.unlink()


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and values), as hex.

    Examples:
        >>> a, b = nn.Linear(2, 1), nn.Linear(2, 1)
        >>> same = weights_hash(a) == weights_hash(b)
        >>> _ = b.load_state_dict(a.state_dict())
        >>> same, weights_hash(a) == weights_hash(b), len(weights_hash(a))
        (False, True, 64)
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def discard_unused(out: Path) -> None:
    """Remove the ``run.json`` and ``config.yaml`` that :func:`prepare` wrote for a run refused before it
    computed anything (e.g. weights not found), so a new folder is left as it was; a folder holding any
    per-sample file is left alone."""
    if any((out / "per_sample").rglob("*.parquet")):
        return
    for name in ("run.json", "config.yaml"):
        (out / name).unlink(missing_ok=True)


def _run_backbones(meta: Mapping[str, Any]) -> List[str]:
    return sorted(set(meta.get("backbones", {})) | set(meta.get("config", {}).get("backbones", [])))


def _overwrite(out: Path) -> None:
    """Remove what the run recorded in ``out/run.json`` wrote; refuse a folder that holds no run."""
    meta_path = out / "run.json"
    if not meta_path.is_file():
        if out.is_dir() and any(p.name not in (LOCK_NAME, READY_NAME) for p in out.iterdir()):
            raise SettingsDiffer(f"--overwrite refused: {str(out)!r} is not empty and holds no run.json, so it was not "
                                 "written by cam-bench run; choose another --out.")
        return
    for backbone in _run_backbones(json.loads(meta_path.read_text())):
        for part in ("per_sample", "maps", "logs"):
            shutil.rmtree(out / part / safe_name(backbone), ignore_errors=True)
        for figure in (out / "figures").glob(f"{safe_name(backbone)}_*.png"):
            figure.unlink()
    for part in ("per_sample", "maps", "logs", "figures"):
        if (out / part).is_dir() and not any((out / part).iterdir()):
            (out / part).rmdir()
    for name in ("results.csv", "leaderboard.md", "config.yaml", "run.json"):
        (out / name).unlink(missing_ok=True)


def fingerprint_diff(a: Mapping[str, Any], b: Mapping[str, Any], values: bool = False, prefix: str = "") -> List[str]:
    """The dotted fields where two fingerprints differ (with ``values``: ``field: a -> b``; a field an
    older run lacks reads as ``'<absent>'``).

    Examples:
        >>> a = {"data": "voc", "metric_args": {"deletion": {"steps": 16}}}
        >>> b = {"data": "voc", "top_k": 5, "metric_args": {"deletion": {"steps": 224}}}
        >>> fingerprint_diff(a, b)
        ['metric_args.deletion.steps', 'top_k']
        >>> fingerprint_diff(a, b, values=True)
        ['metric_args.deletion.steps: 16 -> 224', "top_k: '<absent>' -> 5"]
    """
    out: List[str] = []
    for key in sorted(set(a) | set(b), key=str):
        left, right = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            out += fingerprint_diff(left, right, values, f"{prefix}{key}.")
        elif left != right:
            out.append(f"{prefix}{key}: {left!r} -> {right!r}" if values else f"{prefix}{key}")
    return out


def _warn_versions(out: Path, meta: Mapping[str, Any]) -> None:
    """Warn when resuming with package versions other than those of the results on disk (each attempt's
    versions are recorded in its provenance entry, and the leaderboard header lists every distinct one)."""
    now = package_versions()  # not environment(): the commit is not compared, and it costs two git calls
    before: Dict[str, set] = {}
    for entry in meta.get("provenance") or [{"versions": meta.get("versions", {})}]:
        for name, version in (entry.get("versions") or {}).items():
            before.setdefault(name, set()).add(version)
    changed = [f"{name} {' / '.join(sorted(before[name]))} -> {now[name]}" for name in sorted(now)
               if name in before and before[name] != {now[name]}]
    if changed:
        log.warning("resuming %s with other package versions than its results so far (%s); the new shards "
                    "record theirs and the leaderboard lists every provenance", out, "; ".join(changed))


def prepare(out: Path, fp: Mapping[str, Any], overwrite: bool, rank_zero: bool) -> None:
    """Check the run directory (rank 0 first removes what an ``overwrite`` run wrote); writes nothing else:
    :func:`record_config` writes the settings once every check of the run has passed.

    Raises:
        SettingsDiffer: the folder holds a run with another fingerprint (each field with both values), or
            results without ``run.json``, or ``overwrite`` of a folder that holds no run.
    """
    meta_path = out / "run.json"
    if overwrite and rank_zero:
        _overwrite(out)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        diff = fingerprint_diff(meta["fingerprint"], fp, values=True)
        if diff:
            raise SettingsDiffer(f"{str(out)!r} holds a run with different settings ({'; '.join(diff)}); resuming "
                                 "would mix them. Use another --out, or --overwrite true to start afresh.")
        if rank_zero:
            _warn_versions(out, meta)
    elif any((out / "per_sample").glob("*")):
        raise SettingsDiffer(f"{str(out / 'per_sample')!r} has results but no run.json; use another --out or "
                             "--overwrite true.")


def record_config(out: Path, config: Mapping[str, Any], fp: Mapping[str, Any], command: str,
                  methods: Sequence[str]) -> None:
    """Rank 0, after every check passed: write the settings to ``run.json`` (with the resolved ``methods``,
    which :func:`run_gaps` expects rows of) and ``config.yaml``, and give the shards of attempts killed before
    they recorded them to their provenance entries (:func:`record_backbone`)."""
    import yaml

    meta_path = out / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else \
        {"backbones": {}, "provenance": [], **environment()}
    meta.update({"config": dict(config), "fingerprint": dict(fp), "command": command, "methods": list(methods)})
    for entry in [e for e in meta.get("provenance", []) if "shards_before" in e]:  # its attempt was killed
        _close_attempt(out, meta, entry, killed=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(meta_path, meta)
    resolved = {**config, "out": None, "overwrite": False}
    atomic_write(out / "config.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(resolved, sort_keys=False)))


def check_backbone(out: Path, backbone: str, layers: Mapping[str, Mapping[str, str]], weights: str,
                   preprocessing: Mapping[str, Any]) -> None:
    """Refuse to add to results of ``backbone`` computed at other target layers, with other weights or with
    other preprocessing.

    Raises:
        SettingsDiffer: naming each differing method layer or preprocessing field, or both weight hashes.
    """
    recorded = json.loads((out / "run.json").read_text())["backbones"].get(backbone, {})
    now = recorded_preprocessing(json.loads(json.dumps(dict(preprocessing))))  # tuples as the JSON lists recorded
    prep = fingerprint_diff(recorded_preprocessing(recorded.get("preprocessing", now)), now, values=True)
    if prep:
        raise SettingsDiffer(f"{str(out)!r} holds results of {backbone} computed with other preprocessing "
                             f"({'; '.join(prep)}); resuming would mix them. Use another --out, or --overwrite true.")
    old_layers = recorded.get("layers", {})
    diff = [f"{m}: {dict(old_layers[m])} -> {dict(layers[m])}" for m in sorted(set(old_layers) & set(layers))
            if dict(old_layers[m]) != dict(layers[m])]
    if diff:
        raise SettingsDiffer(f"{str(out)!r} holds results of {backbone} computed at other target layers "
                             f"({'; '.join(diff)}); resuming would mix them. Pass the recorded --target_layer / "
                             "--layout, use another --out, or --overwrite true.")
    if recorded.get("weights_sha256", weights) != weights:
        raise SettingsDiffer(f"{str(out)!r} holds results of {backbone} computed with other weights (SHA-256 "
                             f"{recorded['weights_sha256'][:12]}… -> {weights[:12]}…); resuming would mix two models. "
                             "Pass the recorded --weights and --seed (it seeds random init), use another --out, or "
                             "--overwrite true.")


def open_attempt(out: Path, backbone: str, entry: Mapping[str, Any], before: Mapping[str, Set[int]]) -> None:
    """Rank 0, before ``Trainer.predict``: record ``backbone``'s settings (weights SHA-256, layers,
    preprocessing; ``complete: False``) and open this attempt's provenance entry with the shards on disk
    ``before`` it (method -> shard ids), so that a resume after SIGKILL checks the weights and attributes
    the killed attempt's shards (:func:`record_config`)."""
    meta = json.loads((out / "run.json").read_text())
    meta["backbones"].setdefault(backbone, {"seconds": []}).update({**entry, "complete": False})
    meta.setdefault("provenance", []).append({**environment(), "backbone": backbone, "shards": {},
                                              "shards_before": {m: sorted(ids) for m, ids in before.items()}})
    write_json(out / "run.json", meta)


def _close_attempt(out: Path, meta: Dict[str, Any], entry: Dict[str, Any], killed: bool = False) -> Dict[str, Any]:
    """Fill an open provenance entry with the shards written since it opened (removed when there are none);
    returns them (method -> ids, or a note for a stream without shards)."""
    backbone, before = entry["backbone"], entry.pop("shards_before")
    computed: Dict[str, Any] = {m: sorted(finished_shards(out, backbone, m) - set(ids)) for m, ids in before.items()}
    computed = {m: ids for m, ids in computed.items() if ids}
    for method in before:  # a stream without row counts writes per-rank files, no shards
        if not killed and method not in computed and any(
                (out / "per_sample" / safe_name(backbone) / safe_name(method)).glob("rank*_batch_*.parquet")):
            computed[method] = "all rows (a stream without shards)"
    if not computed:
        meta["provenance"].remove(entry)
    elif killed:
        entry.update({"shards": computed, "killed": "stopped by SIGKILL or a crash before it recorded its shards; "
                                                    "they were found on disk by the next attempt"})
    else:
        entry["shards"] = computed
    return computed


def record_backbone(out: Path, backbone: str, entry: Mapping[str, Any], seconds: float) -> None:
    """Rank 0, when the predict loop ends (also on an exception or a signal): record a backbone's settings and
    timing in ``run.json`` and close this attempt's provenance entry (:func:`open_attempt`) with the shards it
    wrote."""
    meta = json.loads((out / "run.json").read_text())
    record = meta["backbones"].setdefault(backbone, {"seconds": []})
    record.update(entry)
    mine = [e for e in meta.get("provenance", []) if e.get("backbone") == backbone and "shards_before" in e]
    computed = _close_attempt(out, meta, mine[-1]) if mine else {}
    record["seconds"].append({"seconds": round(seconds, 3),
                              "shards": {m: len(ids) if isinstance(ids, list) else ids for m, ids in computed.items()}})
    write_json(out / "run.json", meta)


def incomplete(frame: pd.DataFrame, n: Optional[int], backbones: Sequence[str] = (),
               methods: Optional[Mapping[str, Sequence[str]]] = None) -> Dict[Tuple[str, str], int]:
    """``(backbone, method) -> rows on disk`` for each pair with fewer than the run's ``n`` samples; a
    backbone of ``backbones`` without any row is ``(backbone, "every method") -> 0``, and a method of
    ``methods[backbone]`` (the run's configured methods) without rows is ``(backbone, method) -> 0``.

    Examples:
        >>> frame = pd.DataFrame({"backbone": ["a", "a", "a"], "method": ["x", "x", "y"]})
        >>> incomplete(frame, 2, backbones=["a", "b"])
        {('a', 'y'): 1, ('b', 'every method'): 0}
        >>> incomplete(frame, 2, backbones=["a"], methods={"a": ["x", "y", "z"]})
        {('a', 'y'): 1, ('a', 'z'): 0}
    """
    if n is None:
        return {}
    counts = frame.groupby(["backbone", "method"], sort=True).size()
    out = {key: int(rows) for key, rows in counts.items() if rows < n}
    out.update({(b, "every method"): 0 for b in backbones if b not in set(frame["backbone"])})
    out.update({(b, m): 0 for b in backbones if b in set(frame["backbone"]) for m in (methods or {}).get(b, ())
                if (b, m) not in counts})
    return out


def _configured(metas: List[Dict[str, Any]]) -> Tuple[List[str], Dict[str, List[str]]]:
    """The configs' backbones and, per backbone, the resolved methods expected (``run.json["methods"]``; an
    older ``run.json``: the registered names in ``config.explainers``, as a ``file.py:Class`` needs its file)."""
    backbones = list(dict.fromkeys(b for m in metas for b in m.get("config", {}).get("backbones", [])))
    methods: Dict[str, List[str]] = {}
    for meta in metas:
        names = meta.get("methods", [e for e in meta.get("config", {}).get("explainers", []) if ":" not in e])
        for b in meta.get("config", {}).get("backbones", []):
            methods[b] = list(dict.fromkeys([*methods.get(b, []), *names]))
    return backbones, methods


def run_gaps(metas: List[Dict[str, Any]], frame: pd.DataFrame) -> Dict[Tuple[str, str], int]:
    """:func:`incomplete` for runs: the samples of the fingerprint, the backbones and methods of the configs.
    A stream without row counts (``n`` unknown) is complete per backbone when an attempt finished its predict
    loop (``run.json`` records it) and every configured method has rows; otherwise ``(backbone, "every
    method") -> rows on disk`` (of the method with the fewest), or ``(backbone, method) -> 0``.

    Examples:
        >>> meta = {"fingerprint": {"subset": {"n": None}}, "config": {"backbones": ["a", "b"]},
        ...         "backbones": {"b": {"complete": True}}, "methods": ["x", "y"]}
        >>> frame = pd.DataFrame({"backbone": ["a"] * 5 + ["b"] * 2, "method": list("xxxyyxy")})
        >>> run_gaps([meta], frame)
        {('a', 'every method'): 2}
        >>> run_gaps([{**meta, "methods": ["x", "y", "z"]}], frame)
        {('a', 'every method'): 2, ('b', 'z'): 0}
    """
    backbones, methods = _configured(metas)
    n = metas[0]["fingerprint"]["subset"].get("n")
    if n is not None:
        return incomplete(frame, n, backbones, methods)
    finished = {b for m in metas for b, rec in m.get("backbones", {}).items() if rec.get("complete")}
    rows = frame.groupby(["backbone", "method"]).size().groupby(level=0).min() if len(frame) else {}
    out = {(b, "every method"): int(rows.get(b, 0)) for b in backbones if b not in finished}
    present = set(zip(frame["backbone"], frame["method"])) if len(frame) else set()
    out.update({(b, m): 0 for b in backbones if b in finished for m in methods.get(b, []) if (b, m) not in present})
    return out
