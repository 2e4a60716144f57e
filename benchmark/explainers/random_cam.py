"""Random baseline: a seeded uniform random map on the target layer's grid.

Values ``U(0, 1)`` on the ``h x w`` grid of the target layer (so the map has the granularity
of a CAM of that backbone; learnt from one forward of one image per input size), then the shared upsampling and
min-max normalisation. Each
sample's generator is seeded by ``(seed, dataset index)`` when indices are given (else the
position in the batch), so the maps do not depend on batching or the number of processes.
"""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from benchmark import passes
from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.registry import register_explainer


@register_explainer
class RandomCAM(BaseExplainer):
    """Random: seeded uniform noise on the target layer's grid (sanity baseline).

    Examples:
        >>> from torchvision.models import resnet18
        >>> explainer = RandomCAM(resnet18(num_classes=10), seed=3)
        >>> x, idx = torch.randn(2, 3, 64, 64), torch.tensor([10, 11])
        >>> torch.equal(explainer(x, indices=idx)[1], explainer(x[1:], indices=idx[1:])[0])
        True
    """

    name = "random"
    uses_gradients = False
    class_independent = True

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), seed: int = 0, *,
                 layout: Optional[str] = None) -> None:
        super().__init__(model, target_layer, input_size, layout=layout)
        self.seed = int(seed)
        self._grids: Dict[Tuple[int, ...], Tuple[torch.Size, Tensor]] = {}

    def raw_maps(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor]) -> Tensor:
        size = tuple(images.shape[-2:])
        if size not in self._grids:  # one hooked forward of one image per input size learns the layer's grid
            with passes.phase("setup"):  # once per process: not a pass of any batch (1 or N processes alike)
                layer = self.forward_layer(images[:1], None, None, False)
            self._grids[size] = (layer.activations.shape[-2:], layer.logits[:1].detach())
        grid, logits = self._grids[size]
        if targets is not None:  # the classes are checked as by the other methods, against the model's outputs
            self._check_classes(targets, logits)
        generators = self.sample_generators(indices, len(images), self.seed)
        return torch.stack([torch.rand(grid, generator=g) for g in generators]).to(images)
