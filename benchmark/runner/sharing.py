"""One writer per run folder, and the processes of one launch: the lock, the ready handshake of
externally launched ranks, atomic files, and the two refusals of a shared folder.

* :func:`folder_lock` holds ``<out>/.cam-bench.lock`` (host, PID, start time, a random token) from before
  anything is written until the run ends; a second run names the holder and is refused; a lock left by a dead
  process on this host is taken over with a warning (under the stale file's ``flock``: of two runs finding it,
  one gets the folder); release removes the lock only while it holds the run's own token;
* torchrun and ``srun`` start every rank at once: ranks > 0 :func:`await_ready` until rank 0
  :func:`announce_ready` for this launch (:func:`launch_token`), and share its refusal;
* :func:`atomic_write` writes a uniquely named temporary file and renames it.

Imports nothing of the project; :mod:`benchmark.runner.folder` builds on it.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import pyarrow.parquet as pq

__all__ = ["FolderLocked", "LOCK_NAME", "READY_NAME", "SettingsDiffer", "announce_ready", "atomic_write",
           "await_ready", "folder_lock", "launch_token", "parquet_readable", "write_json"]

log = logging.getLogger("cam_bench.run")

LOCK_NAME = ".cam-bench.lock"
READY_NAME = ".cam-bench.ready"


class FolderLocked(RuntimeError):
    """Another live run holds the folder's lock."""


class SettingsDiffer(ValueError):
    """The folder holds results computed with other settings."""


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers never see half a file (parents are created).

    The temporary name is unique (PID and a random part), so two writers never share one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)  # atomic: a crash never leaves half a file
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Sorted, indented JSON, written atomically."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd: int) -> Dict[str, Any]:
    """The JSON a lock file holds (``{}`` when unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _create(path: Path, me: Mapping[str, Any]) -> bool:
    """Create ``path`` holding ``me`` only if it does not exist; ``False`` when it exists. A hard link of a written
    temporary file, so no reader sees an empty lock (where the file system has no hard links: created with
    ``O_EXCL``, then written)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(me))
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: create exclusively, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
    finally:
        tmp.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[Optional[int]]:
    """An open descriptor of the lock file ``path`` under an exclusive ``flock`` while the context is open, or
    ``None`` when ``path`` was removed or replaced before the ``flock`` was granted (look again).

    Whoever removes a lock file holds its ``flock`` while it checks and removes it, so a check and the removal
    that follows it are one step for every other process. A file system without ``flock`` (``ENOSYS``,
    ``ENOLCK``, ...) is warned about and the check goes on without it.
    """
    try:
        fd = os.open(path, os.O_RDWR)  # O_RDWR: flock on NFS is a write lock
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # e.g. Lustre mounted without flock: check as before, not atomically
            log.warning("no flock on %s (%s): checking the lock without it; two runs that take over one stale "
                        "lock at the same moment may both start", path, err)
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        yield fd if current == os.fstat(fd).st_ino else None
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.cam-bench.lock`` while the context is open (released on every exit path).

    The lock file is created only where none exists (atomically, complete). A lock left by a dead process
    on this host is taken over: the taker holds the stale file's ``flock`` while it checks that the file is
    still the one it judged stale and replaces it, so two runs finding the same stale lock never both get
    the folder (the second finds the first's live lock and is refused). The lock records a random token;
    release removes the lock file only while it still holds this run's token.

    Raises:
        FolderLocked: a live process holds it (the message names host, PID and start time).
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": start, "token": uuid.uuid4().hex}
    while not _create(path, me):
        with _flocked(path) as fd:
            if fd is None:
                continue  # removed or replaced meanwhile: look again
            holder = _read_holder(fd)
            stale = holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and \
                not _alive(holder["pid"])
            if not stale:
                raise FolderLocked(
                    f"{str(out)!r} is in use by another cam-bench run (host {holder.get('host', '?')}, PID "
                    f"{holder.get('pid', '?')}, started {holder.get('start', '?')}); wait for it, or use another "
                    f"--out. If no such run is alive, delete {str(path)!r}.")
            log.warning("taking over the lock of %s left by dead process %s", out, holder["pid"])
            path.unlink()
            if _create(path, me):  # still under the stale file's flock: whoever waited on it looks again
                break
    try:
        yield
    finally:
        with _flocked(path) as fd:
            if fd is not None and _read_holder(fd).get("token") == me["token"]:
                path.unlink()  # ours: another holder's lock (after a manual delete) is left alone
        if created and not any(out.iterdir()):  # a refused run leaves no empty folder behind
            out.rmdir()


def launch_token() -> Optional[str]:
    """An id shared by the processes of one launch that starts every rank at once (torchrun / torch elastic,
    SLURM ``srun`` with several tasks), else ``None`` (one process, or Lightning's own launcher, which starts
    the other ranks only once rank 0 is inside ``Trainer.predict``, after :func:`prepare`).

    Examples:
        >>> launch_token() is None or launch_token().startswith(("torchrun:", "slurm:"))
        True
    """
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and int(env.get("WORLD_SIZE", "1")) > 1:
        return (f"torchrun:{env['TORCHELASTIC_RUN_ID']}:{env.get('TORCHELASTIC_RESTART_COUNT', '0')}:"
                f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in env:
        return f"slurm:{env.get('SLURM_JOB_ID')}.{env['SLURM_STEP_ID']}:{env.get('SLURM_RESTART_COUNT', '0')}"
    return None


def announce_ready(out: Path, token: str, error: Optional[str] = None) -> None:
    """Rank 0: the folder is prepared for launch ``token`` (or refused with ``error``): the other ranks may read."""
    write_json(out / READY_NAME, {"token": token, "error": error})


def await_ready(out: Path, token: str, timeout: float = 1800.0, poll: float = 0.2) -> None:
    """Ranks > 0 of an external launch: wait until rank 0 has checked and written the folder for this launch
    (its lock, overwrite and ``run.json`` come first), so no rank reads ``run.json`` or the shards before.

    Raises:
        SettingsDiffer: rank 0 refused the run (its message).
        TimeoutError: rank 0 did not get there within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ready = json.loads((out / READY_NAME).read_text())
        except (OSError, ValueError):
            ready = {}
        if ready.get("token") == token:
            if ready.get("error"):
                raise SettingsDiffer(f"rank 0 refused the run: {ready['error']}")
            return
        time.sleep(poll)
    raise TimeoutError(f"rank 0 did not prepare {str(out)!r} within {timeout:.0f} s (launch {token}); is the folder "
                       "on a file system every node shares?")


def parquet_readable(path: Path) -> bool:
    """Whether the Parquet file at ``path`` has a readable footer; warns when not (a damaged disk, a file copied
    in part: the atomic writes never leave one), so that a resume recomputes it and the writer replaces it."""
    try:
        pq.read_metadata(path)
        return True
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        log.warning("%s is unreadable (%s): it is recomputed", path, err)
        return False
