"""User explainers from outside the package: a file, an importable module, or an entry point.

A researcher's method is a :class:`~benchmark.explainers.base.BaseExplainer` subclass in a file of
their own. :func:`resolve_explainer` turns any of these specs into a registered name:

* a registered name (``"gradcam"``);
* ``"path/to/my_cam.py:MyCAM"`` -- the file is imported (once) and the class registered;
* ``"my_package.cams:MyCAM"`` -- an importable module path;
* a name published by an installed package under the ``cam_bench.explainers`` entry-point group
  (``[options.entry_points] cam_bench.explainers = mycam = my_package.cams:MyCAM``).

The class registers under ``name`` (class attribute) or its lower-cased class name, unless a
``@register_explainer`` in the file already did.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Type

from benchmark.catalog import ENTRY_POINT_GROUP
from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.registry import _REGISTRY, list_explainers, register_explainer
from benchmark.explainers.sources import import_source

__all__ = ["ENTRY_POINT_GROUP", "load_entry_points", "resolve_explainer"]


def _register(klass: object, spec: str) -> str:
    if not (isinstance(klass, type) and issubclass(klass, BaseExplainer)):
        raise TypeError(f"Expected {spec!r} to name a subclass of BaseExplainer, but got {klass!r}.")
    for name, registered in _REGISTRY.items():
        if registered is klass:
            return name
    return register_explainer(klass).name


def load_entry_points() -> None:
    """Register every explainer published under :data:`ENTRY_POINT_GROUP` by installed packages."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name not in _REGISTRY:
            klass: Type[BaseExplainer] = point.load()
            if not (isinstance(klass, type) and issubclass(klass, BaseExplainer)):
                raise TypeError(f"Entry point {point.name} = {point.value} is not a BaseExplainer subclass.")
            if klass not in _REGISTRY.values():
                register_explainer(name=point.name)(klass)


def resolve_explainer(spec: str) -> str:
    """The registered name of ``spec`` (see the module docstring), importing and registering as needed.

    Raises:
        FileNotFoundError: a ``file.py:Class`` spec whose file does not exist.
        AttributeError: the module has no such class (the message lists its explainer classes).
        KeyError: a plain name that is neither registered nor an entry point (lists the valid names).

    Examples:
        >>> resolve_explainer("gradcam")
        'gradcam'
    """
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"Expected an explainer spec (name, 'file.py:Class' or 'module:Class'), but got {spec!r}.")
    if spec in _REGISTRY:
        return spec
    if ":" not in spec:
        load_entry_points()
        if spec in _REGISTRY:
            return spec
        from benchmark.explainers.registry import _lookup

        _lookup(spec)  # raises the KeyError listing close matches and every valid name
    source, _, attr = spec.rpartition(":")
    module = import_source(source, f"Explainer (from {spec!r})")
    if not hasattr(module, attr):
        found = [n for n, v in vars(module).items()
                 if isinstance(v, type) and issubclass(v, BaseExplainer) and v is not BaseExplainer]
        raise AttributeError(f"{source!r} has no class {attr!r}; its explainer classes: {found}. "
                             f"Registered explainers: {list_explainers()}.")
    return _register(getattr(module, attr), spec)
