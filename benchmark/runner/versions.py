"""What a result was computed with: package versions, the git commit, the date (recorded in ``run.json``)."""
from __future__ import annotations

import datetime
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["environment", "git_commit", "package_versions"]

_PACKAGES = ("cam-bench", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "timm", "numpy")


def package_versions() -> Dict[str, str]:
    """Python and the versions of the packages that decide the numbers.

    Examples:
        >>> sorted(package_versions())[:3]
        ['cam-bench', 'numpy', 'python']
    """
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(path: Optional[Path] = None) -> str:
    """The commit of the checkout holding the package (``+dirty`` with uncommitted changes outside
    ``leaderboards/``), or ``unknown``.

    Examples:
        >>> isinstance(git_commit(), str)
        True
    """
    root = Path(path or Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        # committed results under leaderboards/ are outputs, not code: rewriting them is not "dirty"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)leaderboards"], cwd=root, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def environment() -> Dict[str, Any]:
    """``{"versions", "git_commit", "date"}`` (UTC, ISO 8601, to the second).

    Examples:
        >>> sorted(environment())
        ['date', 'git_commit', 'versions']
    """
    date = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return {"versions": package_versions(), "git_commit": git_commit(), "date": date}
