"""Stop a run at the next batch boundary on SIGTERM, SIGUSR1 or a first Ctrl-C: everything finished stays.

Schedulers stop jobs with signals: SLURM sends TERM (then KILL after ``KillWait``) on preemption or at
the time limit, and ``--signal=USR1@120`` sends USR1 two minutes before it. :class:`StopOnSignal`
records the signal and raises :class:`RunInterrupted` once the batch in flight is written (every
finished shard is on disk, atomically), so a rerun of the same command resumes exactly there. A second
Ctrl-C interrupts at once. The CLI exits with :data:`EXIT_INTERRUPTED` (75, ``EX_TEMPFAIL``: "try
again"), which a batch script can test to requeue the job.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Dict, Optional

from pytorch_lightning.callbacks import Callback

__all__ = ["EXIT_INTERRUPTED", "RunInterrupted", "StopOnSignal"]

log = logging.getLogger("cam_bench.run")

#: the exit code of an interrupted, resumable run
EXIT_INTERRUPTED = 75
_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class RunInterrupted(Exception):
    """The run stopped at a batch boundary on a signal; rerun the same command to resume."""


class StopOnSignal(Callback):
    """Record SIGTERM / SIGUSR1 / SIGINT while installed; raise :class:`RunInterrupted` at the next batch end.

    Examples:
        >>> stop = StopOnSignal()
        >>> with stop:
        ...     signal.raise_signal(signal.SIGUSR1)
        ...     stop.received
        'SIGUSR1'
        >>> try:
        ...     stop.check()
        ... except RunInterrupted as err:
        ...     print(str(err)[:42])
        stopped by SIGUSR1 at a batch boundary; ev
    """

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: now
        self.received = self.received or name
        log.warning("%s received: stopping after the batch in flight (Ctrl-C again to stop now)", name)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            for name in _SIGNALS:
                if hasattr(signal, name):
                    number = getattr(signal, name)
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a signal arrived."""
        if self.received:
            raise RunInterrupted(f"stopped by {self.received} at a batch boundary; every finished shard is on disk: "
                                 "rerun the same command to resume.")

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self.check()
