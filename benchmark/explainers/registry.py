"""The explainer registry: ``@register_explainer``, ``list_explainers``, ``create_explainer``.

Modelled on timm's model registry: a method registers itself by decorating its class, the
test suite parametrizes over :func:`list_explainers`, and an unknown name raises a ``KeyError``
that lists the close matches.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, List, Optional, Type, TypeVar, Union, overload

from torch import nn

from benchmark.explainers.base import BaseExplainer

__all__ = ["create_explainer", "default_explainers", "describe_explainer", "explainer_class", "list_explainers",
           "register_explainer"]

_REGISTRY: Dict[str, Type[BaseExplainer]] = {}
E = TypeVar("E", bound=Type[BaseExplainer])


@overload
def register_explainer(cls: E) -> E: ...


@overload
def register_explainer(*, name: Optional[str] = None) -> Callable[[E], E]: ...


def register_explainer(cls: Optional[E] = None, *, name: Optional[str] = None) -> Union[E, Callable[[E], E]]:
    """Class decorator that adds an explainer to the registry.

    The name is ``name``, else the class attribute ``name``, else the lower-cased class name.

    Examples:
        >>> import torch
        >>> @register_explainer(name="doctest_ones")
        ... class Ones(BaseExplainer):
        ...     '''Every activation weighted by one.'''
        ...     uses_gradients = False
        ...     def weights(self, inputs):
        ...         return torch.ones_like(inputs.activations)
        >>> "doctest_ones" in list_explainers()
        True
        >>> _ = _REGISTRY.pop("doctest_ones")
    """

    def add(klass: E) -> E:
        if not (isinstance(klass, type) and issubclass(klass, BaseExplainer)):
            raise TypeError(f"Expected a subclass of BaseExplainer, but got {klass!r}.")
        key = name or klass.__dict__.get("name") or klass.__name__.lower()
        if key in _REGISTRY and _REGISTRY[key] is not klass:
            raise ValueError(f"An explainer named {key!r} is already registered ({_REGISTRY[key].__name__}).")
        klass.name = key
        _REGISTRY[key] = klass
        return klass

    return add(cls) if cls is not None else add


def list_explainers() -> List[str]:
    """Sorted names of the registered explainers.

    Examples:
        >>> from benchmark.explainers import list_explainers
        >>> list_explainers()[:3]
        ['ablationcam', 'attentionrollout', 'center']
    """
    return sorted(_REGISTRY)


def default_explainers() -> List[str]:
    """Sorted names of the explainers run when none are named (``in_default_run``): the CAM methods and
    baselines; the pixel-attribution methods (guided backprop, integrated gradients, occlusion, ...) run
    only when named.

    Examples:
        >>> "gradcam" in default_explainers(), "occlusion" in default_explainers()
        (True, False)
    """
    return sorted(name for name, cls in _REGISTRY.items() if cls.in_default_run)


def _lookup(name: str) -> Type[BaseExplainer]:
    if not isinstance(name, str):
        raise TypeError(f"Expected the explainer name to be a str, but got {type(name).__name__}.")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.5)
        raise KeyError(f"Unknown explainer {name!r}. Close matches: {close}. Valid: {list_explainers()}.")
    return _REGISTRY[name]


def explainer_class(name: str) -> Type[BaseExplainer]:
    """The class registered as ``name``, e.g. to read its options before building it.

    Raises:
        KeyError: unknown name, as :func:`create_explainer`.

    Examples:
        >>> explainer_class("scorecam").__name__
        'ScoreCAM'
    """
    return _lookup(name)


def describe_explainer(name: str) -> str:
    """First line of the explainer's docstring (one-line description for listings)."""
    doc = _lookup(name).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def create_explainer(name: str, model: nn.Module, **kwargs) -> BaseExplainer:
    """Build the registered explainer ``name`` for ``model``.

    Args:
        name: a name from :func:`list_explainers`.
        model: the classifier.
        **kwargs: the explainer's arguments (``target_layer``, ``input_size``, method options).

    Raises:
        KeyError: unknown name; the message lists close matches and every valid name.

    Examples:
        >>> from torchvision.models import resnet18
        >>> from benchmark.explainers import create_explainer
        >>> create_explainer("gradcam", resnet18())
        GradCAM(target_layer='layer4')
    """
    return _lookup(name)(model, **kwargs)
