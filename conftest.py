"""Shared test setup: the fixture builders (``tests/fixtures_data.py``) importable as ``fixtures_data`` from
every test folder, and a fixture that unregisters the explainers a test registers (user files, plugins).

This file lives in the repository root, not in ``tests/``: pytest puts a conftest's folder on ``sys.path``,
and ``tests/`` there makes ``tests/datamodules`` a namespace package that shadows the real ``datamodules``
package under a fresh editable install (whose finder comes after the path finder). For the same reason
``fixtures_data`` is registered in ``sys.modules`` by path.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

from benchmark.explainers.registry import _REGISTRY

_spec = importlib.util.spec_from_file_location("fixtures_data", Path(__file__).parent / "tests" / "fixtures_data.py")
fixtures_data = importlib.util.module_from_spec(_spec)
sys.modules["fixtures_data"] = fixtures_data
_spec.loader.exec_module(fixtures_data)


@pytest.fixture
def clean_registry():
    before = set(_REGISTRY)
    yield
    for name in set(_REGISTRY) - before:
        del _REGISTRY[name]
