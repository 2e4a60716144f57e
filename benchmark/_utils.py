"""Small helpers shared across the package."""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: object) -> Iterator[None]:
    """Put ``model`` in eval mode; restore every submodule's own train flag on exit, also after an error.

    ``model.train(flag)`` would overwrite a submodule whose mode was set apart, so each flag is
    restored individually. Anything that is not an ``nn.Module`` (a plain callable) is left alone.

    Example:
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
