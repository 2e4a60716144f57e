"""An inference-only copy of a model for the many masked forwards of Score-CAM.

Score-CAM needs one forward per channel and image and reads only the outputs, so those
forwards may run on a copy of the model optimised for inference: batch-norm folded into the
preceding convolution (``torch.fx.experimental.optimization.fuse``, where the model is
fx-traceable) and weights in channels-last memory format (faster oneDNN kernels on CPU,
tensor cores on GPU). The outputs equal the original model's up to float rounding (~1e-6
relative). The copy is rebuilt whenever the model's tensors change: device or dtype (e.g. after
Lightning moves the module), storage, or any in-place update (``load_state_dict``, an optimiser
step, a model-randomisation sanity check) -- tracked by the tensors' version counters.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional, Tuple

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["InferenceCopy"]


class InferenceCopy:
    """Lazily built, cached inference copy of ``model``.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=4).eval()
        >>> fast = InferenceCopy(model)
        >>> x = torch.randn(2, 3, 64, 64)
        >>> torch.allclose(fast(x), model(x), atol=1e-4)
        True
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._copy: Optional[nn.Module] = None
        self._key: Optional[Tuple] = None

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
        return model.to(memory_format=torch.channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        key = tuple((t.device, t.dtype, t.data_ptr(), t._version) for t in tensors)
        if self._copy is None or key != self._key:
            self._copy, self._key = self._build(), key
        return self._copy(images.contiguous(memory_format=torch.channels_last))
