"""Small helpers shared across the package."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from torch import nn

__all__ = ["check_choice", "check_positive_int", "eval_mode"]


def check_choice(value: Any, name: str, choices: Sequence) -> Any:
    """Raise a ValueError listing ``choices`` when ``value`` is not one of them.

    Examples:
        >>> check_choice("mean", "reduction", ("mean", "none"))
        'mean'
    """
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {tuple(choices)}, but got {value!r}.")
    return value


def check_positive_int(value: Any, name: str) -> int:
    """``value`` if it is an int >= 1; a TypeError for another type, a ValueError for a smaller int.

    Examples:
        >>> check_positive_int(3, "steps")
        3
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected `{name}` to be a positive int, but got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int, but got {value}.")
    return value


@contextlib.contextmanager
def eval_mode(model: object) -> Iterator[None]:
    """Put ``model`` in eval mode; restore every submodule's own train flag on exit, also after an error.

    ``model.train(flag)`` would overwrite a submodule whose mode was set apart, so each flag is
    restored individually. Anything that is not an ``nn.Module`` (a plain callable) is left alone.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> net[1].eval()  # doctest: +ELLIPSIS
        Dropout(...)
        >>> with eval_mode(net):
        ...     net.training
        False
        >>> net.training, net[1].training
        (True, False)
    """
    flags = [(module, module.training) for module in model.modules()] if isinstance(model, nn.Module) else []
    try:
        if isinstance(model, nn.Module):
            model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag
