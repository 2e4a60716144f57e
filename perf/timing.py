"""Timing and peak-memory helpers shared by the speed scripts.

* :func:`median_time`: warm-up once, then rounds that alternate the measured functions
  (A B A B ...), so that slow drifts of the machine (turbo, other load) hit every function alike;
  medians per function.
* :func:`peak_memory_mib`: peak memory a call adds on top of what was held before it: CUDA
  from the allocator's peak statistics, CPU from the process's peak resident set (``VmHWM`` in
  ``/proc/self/status``, reset through ``/proc/self/clear_refs`` after returning freed heap pages
  to the system with ``malloc_trim``). ``None`` where neither is available.
* :func:`run_header`: the command / machine / date lines every committed speed file starts with;
  :func:`write_report` writes and prints such a file.
"""
from __future__ import annotations

import ctypes
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

__all__ = ["command_line", "median_time", "peak_memory_mib", "round_ratios", "run_header", "write_report"]


def median_time(fns: Dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None] = lambda: None,
                warmup: Optional[Dict[str, Callable[[], object]]] = None,
                peaks: Optional[Dict[str, Optional[float]]] = None,
                device: torch.device | str = "cpu", pause: float = 0.0,
                rounds: Optional[Dict[str, List[float]]] = None) -> Dict[str, float]:
    """Seconds per call of each function: one warm-up call each, then ``repeats`` alternated rounds; medians.

    Args:
        fns: name -> function to time.
        repeats: timed rounds; each round calls every function once, in order.
        sync: runs after each call inside the timed region (e.g. ``torch.cuda.synchronize``).
        warmup: name -> a cheaper call that does the same first-call work (lazy copies, kernel
            selection), used instead of a full call of that function before the timed rounds.

    Examples:
        >>> calls = []
        >>> t = median_time({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2)
        >>> calls, sorted(t)
        (['a', 'b', 'a', 'b', 'a', 'b'], ['a', 'b'])
    """
    if repeats < 1:
        raise ValueError(f"Expected `repeats` >= 1, but got {repeats}.")
    warmup = warmup or {}
    for name, fn in fns.items():
        warmup.get(name, fn)()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for round_ in range(repeats):
        for name, fn in fns.items():
            time.sleep(pause)
            tracker = _Peak(device) if peaks is not None and round_ == repeats - 1 else None
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
            if tracker is not None:
                peaks[name] = tracker.stop()
    if rounds is not None:
        rounds.update(times)
    return {name: statistics.median(values) for name, values in times.items()}


def round_ratios(rounds: Dict[str, List[float]], top: str, bottom: str) -> List[float]:
    """``top / bottom`` taken within each round of :func:`median_time`'s ``rounds`` (rounds where ``bottom`` is
    0 are left out; an unmeasured name gives no ratios).

    Examples:
        >>> round_ratios({"ours": [1.0, 3.0, 2.0], "forward": [2.0, 0.0, 1.0]}, "ours", "forward")
        [0.5, 2.0]
        >>> round_ratios({"ours": [1.0]}, "ours", "peer")
        []
    """
    return [a / b for a, b in zip(rounds.get(top) or [], rounds.get(bottom) or []) if b > 0]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_cpu_peak() -> Optional[int]:
    """Return freed heap to the system, reset the peak RSS; the RSS now in KiB (None if unsupported)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return _status_kib("VmRSS")
    except OSError:
        return None


class _Peak:
    """Peak memory from construction to :meth:`stop` (see :func:`peak_memory_mib`)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.before = _reset_cpu_peak()

    def stop(self) -> Optional[float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.before) / 2 ** 20
        if self.before is None:
            return None
        return max(0, _status_kib("VmHWM") - self.before) / 2 ** 10


def peak_memory_mib(fn: Callable[[], object], device: torch.device | str = "cpu") -> Optional[float]:
    """Peak memory (MiB) that one call of ``fn`` adds to what was in use just before it.

    On CUDA it is the caching allocator's peak of allocated bytes; on CPU (Linux) the growth of
    the process's peak resident set, which also counts allocator and library workspaces. ``None``
    when the platform offers neither.

    Examples:
        >>> mib = peak_memory_mib(lambda: torch.ones(64, 1024, 1024))  # 256 MiB of float32
        >>> mib is None or 200 < mib < 400
        True
    """
    tracker = _Peak(device)
    fn()
    return tracker.stop()


def machine(device: torch.device | str = "cpu") -> str:
    """One line naming the device, threads, OS, Python and torch."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return (f"{name}, {torch.get_num_threads()} torch threads, {platform.system()} {platform.release()}; "
            f"python {platform.python_version()}, torch {torch.__version__}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line(module: str, argv: Optional[Sequence[str]] = None) -> str:
    """The command that ran a perf script, for its results file: ``python -m <module>`` and its arguments
    (``argv``, or the process's own when ``None``).

    Examples:
        >>> command_line("perf.chunks", ["--chunks", "8"])
        'python -m perf.chunks --chunks 8'
    """
    return " ".join(["python -m " + module, *(argv if argv is not None else sys.argv[1:])])


def run_header(command: str, seconds: float, device: torch.device | str = "cpu") -> List[str]:
    """The ``command`` / ``machine`` / ``date`` lines every committed speed file starts with."""
    return [
        f"- command: `{command}`",
        f"- machine: {machine(device)}",
        f"- date: {datetime.date.today().isoformat()}; measured in {seconds:.0f} s",
    ]


def write_report(text: str, out: Optional[str]) -> None:
    """Write ``text`` to ``out`` (its folder made; nothing written when ``out`` is ``None``) and print it."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    print(text)
