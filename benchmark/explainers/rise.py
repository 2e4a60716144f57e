"""RISE (Petsiuk, Das & Saenko, BMVC 2018): the class score of randomly masked inputs, averaged per pixel.

``S_c = (1 / (N p1)) sum_i f_c(x * M_i) M_i``, with ``N`` masks made as in the authors' code
(eclique/RISE ``generate_masks``): a binary ``s x s`` grid, each cell on with probability ``p1``; bilinear
upsampling (scikit-image ``resize``, ``order=1``, ``mode="reflect"``) to ``(s + 1) * ceil(H / s)`` pixels;
a crop of ``H x W`` at a random shift of less than one cell. The draws follow the authors' order -- the whole
grid, then one ``(dy, dx)`` shift per mask -- from ``numpy.random.RandomState(seed)``, so ``seed=0`` gives
their masks after ``np.random.seed(0)`` (tested against a transcription). The masks depend only on the seed
and the image size: one set for every image, as in the paper, so 1 and N processes give the same maps. They
are built chunk by chunk (an ``N x H x W`` stack is 800 MB at 224 x 224), by two small interpolation matrices.

``f_c`` is the softmax probability of the class (the authors' models end in a softmax; ``score="logit"``:
the logit). Masks multiply the normalised input (0 = the mean colour). The masked forwards run on the
batch-norm-folded inference copy (:class:`~benchmark.explainers.fastpath.InferenceCopy`), ``chunk_size``
masks of one image per forward, in fixed chunks, so a map does not depend on the batch it came in (the same
bytes on 1 and N processes). Cost: ``n_masks`` forwards per image (4,000 by default): opt-in. The same
forwards score every class, so the maps of several classes (the module's top-k) come from one call
(:meth:`~benchmark.explainers.base.BaseExplainer.class_maps`), each bitwise equal to its own call.
"""
import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from benchmark._utils import check_choice, check_positive_int
from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.fastpath import InferenceCopy
from benchmark.explainers.registry import register_explainer

__all__ = ["RISE", "mirror_linear_matrix"]


def mirror_linear_matrix(size_in: int, size_out: int) -> Tensor:
    """``(size_out, size_in)`` float64 matrix of linear interpolation with half-pixel centres and mirrored
    borders (``d c b | a b c d | c b a``): scikit-image ``resize(order=1, mode="reflect")`` along one axis.

    Examples:
        >>> mirror_linear_matrix(2, 4) @ torch.tensor([0.0, 1.0], dtype=torch.float64)
        tensor([0.2500, 0.2500, 0.7500, 0.7500], dtype=torch.float64)
    """
    src = (torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5
    low = src.floor()
    frac = src - low
    period = 2 * (size_in - 1)

    def mirror(index: Tensor) -> Tensor:
        index = index.long().remainder(period)
        return torch.where(index >= size_in, period - index, index)

    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    matrix.index_put_((rows, mirror(low)), 1 - frac, accumulate=True)
    matrix.index_put_((rows, mirror(low + 1)), frac, accumulate=True)
    return matrix


@register_explainer
class RISE(BaseExplainer):
    """RISE: the class score of randomly masked inputs, averaged over the masks that keep each pixel.

    Examples:
        >>> from torchvision.models import resnet18
        >>> rise = RISE(resnet18(num_classes=4).eval(), input_size=(3, 32, 32), n_masks=16, chunk_size=16)
        >>> rise(torch.randn(2, 3, 32, 32), torch.tensor([0, 3])).shape
        torch.Size([2, 32, 32])
    """

    name = "rise"
    uses_layer = False
    uses_gradients = False
    in_default_run = False  # n_masks forwards per image: opt in by name
    scores_every_class = True  # the masked forwards score every class: the top-k maps come from the same ones

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), n_masks: int = 4000, grid_size: int = 7,
                 p1: float = 0.5, seed: int = 0, chunk_size: int = 64, score: str = "probability", *,
                 layout=None) -> None:
        super().__init__(model, target_layer, input_size, layout=layout)
        self.n_masks = check_positive_int(n_masks, "n_masks")
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.grid_size = check_positive_int(grid_size, "grid_size")
        if self.grid_size < 2:
            raise ValueError(f"Expected `grid_size` >= 2, but got {grid_size}.")
        if isinstance(p1, bool) or not isinstance(p1, (int, float)) or not 0 < p1 <= 1:
            raise ValueError(f"Expected `p1` in (0, 1], but got {p1!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Expected `seed` to be an int >= 0, but got {seed!r}.")
        self.p1, self.seed = float(p1), seed
        self.score = check_choice(score, "score", ("probability", "logit"))
        self.fast_model = InferenceCopy(model)
        self._draws: Dict[Tuple[int, int], Tuple[Tensor, np.ndarray, Tensor, Tensor]] = {}

    def _plan(self, height: int, width: int) -> Tuple[Tensor, np.ndarray, Tensor, Tensor]:
        """The grids ``(N, s, s)``, shifts ``(N, 2)`` and row / column interpolation matrices for one size."""
        if (height, width) not in self._draws:
            s, n = self.grid_size, self.n_masks
            state = np.random.RandomState(self.seed)
            grid = torch.from_numpy((state.rand(n, s, s) < self.p1).astype(np.float64))
            cell_h, cell_w = math.ceil(height / s), math.ceil(width / s)
            shifts = np.array([(state.randint(0, cell_h), state.randint(0, cell_w)) for _ in range(n)])
            rows = mirror_linear_matrix(s, (s + 1) * cell_h)
            cols = mirror_linear_matrix(s, (s + 1) * cell_w)
            self._draws[(height, width)] = (grid, shifts, rows, cols)
        return self._draws[(height, width)]

    def masks(self, height: int, width: int, start: int = 0, stop: Optional[int] = None) -> Tensor:
        """Masks ``start:stop`` for ``height x width`` images, ``(n, H, W)`` float64 in ``[0, 1]``."""
        grid, shifts, rows, cols = self._plan(height, width)
        picked = range(start, self.n_masks if stop is None else min(stop, self.n_masks))
        r = torch.stack([rows[shifts[i, 0]:shifts[i, 0] + height] for i in picked])
        c = torch.stack([cols[shifts[i, 1]:shifts[i, 1] + width] for i in picked])
        return r @ grid[start:start + len(picked)] @ c.transpose(1, 2)

    def raw_class_maps(self, images: Tensor, classes: Optional[Tensor], indices) -> Tensor:
        """``(B, k, H, W)`` maps of ``(B, k)`` classes (``None``: the predicted ones) from the same masked forwards,
        each as a one-class call gives it (one product per class)."""
        batch, _, height, width = images.shape
        logits = self._check_logits(self.model(images), images)  # the class check, on the model itself
        self.clean_logits = logits  # the forward of the images: on x * CAM it gives Average Drop its probability
        classes = self._check_classes(classes, logits)
        classes = classes[:, None] if classes.ndim == 1 else classes
        saliency = images.new_zeros(batch, classes.shape[1], height * width, dtype=torch.float64)
        for start in range(0, self.n_masks, self.chunk_size):  # fixed chunks: the same sums whatever the batch
            masks = self.masks(height, width, start, start + self.chunk_size).to(images.device)  # (n, H, W)
            flat = masks.flatten(1)
            for b in range(batch):
                out = self.fast_model(images[b] * masks[:, None].to(images.dtype)).float()
                out = out.softmax(dim=1) if self.score == "probability" else out
                for j in range(classes.shape[1]):
                    saliency[b, j] += out[:, classes[b, j]].double() @ flat
        return (saliency / (self.n_masks * self.p1)).view(batch, -1, height, width).to(images.dtype)
