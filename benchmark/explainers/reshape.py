"""A user's reshape function as a layout: pytorch-grad-cam's ``reshape_transform``, verified.

Where the built-in layouts (``"nchw"``, ``"nhwc"``, ``"tokens:P[:HxW]"``) do not describe a layer,
``layout=`` also takes a function ``output -> (B, C, h, w)`` -- the ``reshape_transform`` that
pytorch-grad-cam users already have -- or its import path ``"package.module:function"`` or
``"path/to/file.py:function"`` (the forms for ``--explainer_args`` and ``--layout``). The function
may only *select and rearrange* elements (slicing, ``reshape``/``view``, ``permute``/``transpose``,
``flatten``): that is checked once on the layer's real output by running it on the element
indices, so that every explainer can also write its result back in the layer's own layout
(Ablation-CAM zeroes a channel there) and gradients flow through it. A function that computes
(interpolates, averages tokens, ...) is refused with the reason; results record the layout as
``reshape:<module>:<function>``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from benchmark.explainers.layouts import Layout, parse_layout, spatial_readings
from benchmark.explainers.sources import import_source

__all__ = ["ReshapeLayout", "as_layout"]

_PATH = re.compile(r"^(?P<source>[A-Za-z_][\w.]*|.+\.py):[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class ReshapeLayout(Layout):
    """A verified user reshape; :meth:`to_nchw` applies it, :meth:`from_nchw` scatters back.

    Examples:
        >>> def vit_reshape(t):  # pytorch-grad-cam's ViT reshape_transform on a 2 x 2 grid
        ...     return t[:, 1:].reshape(t.shape[0], 2, 2, t.shape[2]).permute(0, 3, 1, 2)
        >>> layout = as_layout(vit_reshape)
        >>> tokens = torch.randn(2, 5, 3)
        >>> layout.check(tokens, (32, 32), "layer", "fix")
        >>> nchw = layout.to_nchw(tokens, (32, 32))
        >>> nchw.shape, torch.equal(layout.from_nchw(nchw, tokens), tokens)
        (torch.Size([2, 3, 2, 2]), True)
    """

    kind: str = "reshape"
    fn: Optional[Callable[[Tensor], Tensor]] = field(default=None, compare=False)
    name: str = ""
    _index: Dict[Tuple, Tensor] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __str__(self) -> str:
        return f"reshape:{self.name}"

    def to_nchw(self, output: Tensor, image_hw: Sequence[int]) -> Tensor:
        """The function's ``(B, C, h, w)`` result."""
        return self.fn(output)

    def index(self, original: Tensor) -> Tensor:
        """``(B, C, h, w)`` flat positions in ``original`` that the function reads (cached per shape)."""
        key = (tuple(original.shape), original.device)
        if key not in self._index:
            self._index.clear()
            self._index[key] = self.fn(torch.arange(original.numel(), device=original.device).view(original.shape))
        return self._index[key]

    def from_nchw(self, maps: Tensor, original: Tensor) -> Tensor:
        """``original`` with the positions the function reads replaced by ``maps`` (differentiable in ``maps``)."""
        flat = original.reshape(-1).to(maps.dtype)
        return flat.index_put((self.index(original).reshape(-1),), maps.reshape(-1)).view(original.shape)

    def check(self, output: Tensor, image_hw: Sequence[int], where: str, fix: str) -> None:
        """Refuse a function that does not return one grid fitting the image, or that computes.

        Raises:
            ValueError: naming the layer, what the function returned and why it cannot be used.
        """
        try:
            result = self.fn(output)
        except Exception as err:  # noqa: BLE001 -- the user's function: report, with the layer
            raise ValueError(f"Expected layout='{self}' to reshape {where}, but it raised {err!r}; {fix}.") from err
        shape = tuple(result.shape) if isinstance(result, Tensor) else type(result).__name__
        if not isinstance(result, Tensor) or result.ndim != 4 or "nchw" not in spatial_readings(shape, image_hw):
            raise ValueError(f"Expected layout='{self}' to turn {where} into (B, C, h, w) with an h x w grid fitting "
                             f"the image, but it returned {shape}; {fix}.")
        try:
            index = self.index(output)
        except Exception:  # noqa: BLE001 -- e.g. a mean over integer indices: it computes
            index = None
        gathers = (isinstance(index, Tensor) and not index.is_floating_point() and index.shape == result.shape
                   and int(index.min()) >= 0 and int(index.max()) < output.numel()
                   and len(torch.unique(index)) == index.numel()
                   and torch.equal(result, output.reshape(-1)[index.reshape(-1)].view(result.shape)))
        if not gathers:
            self._index.clear()
            raise ValueError(f"Expected layout='{self}' to only select and rearrange the elements of {where} "
                             "(slicing, reshape, permute, transpose), but it computes new values or repeats elements, "
                             f"so results could not be written back in the layer's layout; {fix}.")


def _load(path: str) -> Callable[[Tensor], Tensor]:
    source, _, attr = path.rpartition(":")
    try:
        target = import_source(source, f"Reshape function (layout={path!r})")
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Expected layout={path!r} to name a reshape function 'package.module:function' or "
                         f"'path/to/file.py:function' that can be imported, but {err}.") from None
    if not callable(target):
        raise ValueError(f"Expected layout={path!r} to name a function, but got {type(target).__name__}.")
    return target


def as_layout(spec: Union[str, Callable[[Tensor], Tensor], Layout, None]) -> Optional[Layout]:
    """``layout=`` as a :class:`Layout`: the built-in names, a reshape function, or its import path.

    Examples:
        >>> str(as_layout("tokens:1")), str(as_layout("torch:flatten"))
        ('tokens:1', 'reshape:torch:flatten')
    """
    if isinstance(spec, str) and _PATH.match(spec.strip()) and spec.split(":")[0].lower() != "tokens":
        return ReshapeLayout(fn=_load(spec.strip()), name=spec.strip())
    if callable(spec) and not isinstance(spec, Layout):
        name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', type(spec).__name__)}"
        return ReshapeLayout(fn=spec, name=name)
    return parse_layout(spec)
