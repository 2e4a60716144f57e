"""Import a user's Python source by module path or file path (explainer plugins, reshape functions).

Examples:
    >>> import_source("math").__name__
    'math'
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["import_file", "import_source"]


def import_file(path: Path) -> ModuleType:
    """Import the file at ``path`` once, under a name unique to its resolved path."""
    name = f"cam_bench_user_{path.stem}_{abs(hash(str(path.resolve()))):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot import {str(path)!r} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_source(source: str, what: str = "Source") -> ModuleType:
    """``"path/to/file.py"`` (imported once) or an importable ``"package.module"``.

    Raises:
        FileNotFoundError: a file path that does not exist (``what`` names it in the message).
    """
    if source.endswith(".py") or "/" in source or "\\" in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {str(path)!r} does not exist.")
        return import_file(path)
    return importlib.import_module(source)
