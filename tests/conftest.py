"""Shared test setup: the fixture builders (``tests/fixtures_data.py``) importable from every test folder,
and a fixture that unregisters the explainers a test registers (user files, plugins)."""
import sys
from pathlib import Path

import pytest

from benchmark.explainers.registry import _REGISTRY

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def clean_registry():
    before = set(_REGISTRY)
    yield
    for name in set(_REGISTRY) - before:
        del _REGISTRY[name]
