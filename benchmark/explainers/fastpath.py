"""An inference-only copy of a model for the many masked forwards of Score-CAM.

Score-CAM needs one forward per channel and image and reads only the outputs, so those
forwards may run on a copy of the model optimised for inference: batch-norm folded into the
preceding convolution (``torch.fx.experimental.optimization.fuse``, where the model is
fx-traceable) and weights in channels-last memory format (faster oneDNN kernels on CPU,
tensor cores on GPU). The outputs equal the original model's up to float rounding (~1e-6
relative). The copy is rebuilt whenever the model's tensors change: device or dtype (e.g. after
Lightning moves the module), storage, or any in-place update (``load_state_dict``, an optimiser
step, a model-randomisation sanity check) -- tracked by the tensors' version counters.

``compile=True`` also runs the copy through :func:`torch.compile` (Inductor, weights frozen as
constants). Compiling costs seconds to a minute once per model and input shape, so only batches
at least as large as the largest seen so far run compiled (a larger one compiles once more); a
smaller one (the last chunk of a run) runs on the same copy uncompiled. It pays on long runs of
large models (``leaderboards/speed_options_resnet*.md`` have the measured gain and compile time); off by default.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional, Tuple

import torch
from torch import nn

from benchmark import passes

log = logging.getLogger(__name__)

__all__ = ["InferenceCopy"]


class InferenceCopy:
    """Lazily built, cached inference copy of ``model``.

    Examples:
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=4).eval()
        >>> fast = InferenceCopy(model)
        >>> x = torch.randn(2, 3, 64, 64)
        >>> torch.allclose(fast(x), model(x), atol=1e-4)
        True
    """

    def __init__(self, model: nn.Module, compile: bool = False) -> None:
        self.model = model
        self.compile = bool(compile)
        self._copy: Optional[nn.Module] = None
        self._key: Optional[Tuple] = None
        self._eager: Optional[nn.Module] = None  # the uncompiled copy (for smaller batches when compiled)
        self._batch = 0  # largest batch seen

    def _build(self) -> nn.Module:
        with torch.inference_mode(False), torch.no_grad():  # normal tensors even if first called in inference mode
            return self._fused_copy()

    def _fused_copy(self) -> nn.Module:
        model = copy.deepcopy(self.model).eval().requires_grad_(False)
        try:
            from torch.fx.experimental.optimization import fuse

            model = fuse(model, inplace=True)
        except Exception as err:  # not fx-traceable (data-dependent control flow): keep unfused
            log.info("Batch-norm folding skipped for %s (%s: %s)", type(self.model).__name__,
                     type(err).__name__, err)
        try:
            model = model.to(memory_format=torch.channels_last)
        except RuntimeError as err:  # e.g. the fx-fused timm Swin: a 4-D constant that cannot be channels-last
            log.info("Channels-last weights skipped for %s (%s)", type(self.model).__name__, err)
        self._eager, self._batch = model, 0
        return torch.compile(model, dynamic=False, options={"freezing": True}) if self.compile else model

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        key = tuple((t.device, t.dtype, t.data_ptr(), t._version) for t in tensors)
        if self._copy is None or key != self._key:
            self._copy, self._key = self._build(), key
        images = images.contiguous(memory_format=torch.channels_last)
        passes.count("forward", len(images))
        if self.compile and len(images) < self._batch:  # a smaller batch than compiled for: uncompiled
            return self._eager(images)
        self._batch = len(images)
        return self._copy(images)
