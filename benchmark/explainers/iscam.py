"""IS-CAM (Naidu et al., 2020, "IS-CAM: Integrated Score-CAM for axiomatic-based explanations").

Score-CAM with the masked input integrated along a path. The paper's masks are
``M_i = sum_{j<i} (j/N) x * M_k``, that is ``c_i x * M_k`` with ``c_i = i(i-1)/(2N)``, ``i = 1..N``: coefficients
0, 1/N, 3/N, ..., (N-1)/2. ``M_k`` is the upsampled, min-max normalised activation
(:func:`~benchmark.explainers.scorecam.normalized_masks`). The channel score is ``s_k = 1/N sum_i y_c(M_i)`` and
``w = softmax_k(s_k)``. The baseline score and the zero coefficient's ``y_c(0)`` are the same for every channel
and cancel in the softmax, so only the N-1 positive coefficients cost forwards.

``schedule="paper"`` (default) follows the formula of the paper as torch-cam's docstring and its maintainer
transcribe it (torch-cam issue #154); the paper could not be read here. ``schedule="torch-cam"`` is torch-cam
0.5.0's code, which accumulates ``(i+1)/N`` instead: ``c_i = i(i+1)/(2N)``, ``i = 1..N``, i.e. 1/N, 3/N, ...,
(N+1)/2, one coefficient later than its own docstring. That option equals torch-cam's ``ISCAM`` (tested), and the
default equals a direct transcription of the formula. A constant channel's mask is 0: its score is ``y_c`` of the
all-zero input, one forward per batch. The masked forwards run in chunks of ``chunk_size`` across the batch on
the inference copy.
"""
import torch
from torch import Tensor

from benchmark._utils import check_choice
from benchmark.explainers.base import CAMInputs
from benchmark.explainers.registry import register_explainer
from benchmark.explainers.scorecam import ScoreCAM, normalized_masks

SCHEDULES = ("paper", "torch-cam")


def integration_coefficients(n_samples: int, schedule: str = "paper") -> Tensor:
    """The N mask coefficients ``c_i`` of IS-CAM's path (float64).

    Examples:
        >>> integration_coefficients(4).tolist()
        [0.0, 0.25, 0.75, 1.5]
        >>> integration_coefficients(4, "torch-cam").tolist()
        [0.25, 0.75, 1.5, 2.5]
    """
    i = torch.arange(1, n_samples + 1, dtype=torch.float64)
    shift = 1 if check_choice(schedule, "schedule", SCHEDULES) == "torch-cam" else -1
    return i * (i + shift) / (2 * n_samples)


@register_explainer
class ISCAM(ScoreCAM):
    """IS-CAM: channel weights = softmax over channels of the target logit integrated along the masked path.

    Examples:
        >>> from torchvision.models import resnet18
        >>> ISCAM(resnet18(num_classes=10), n_samples=3, chunk_size=256)(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    name = "iscam"
    in_default_run = False  # (N - 1) x C forwards per image

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), n_samples: int = 10,
                 schedule: str = "paper", chunk_size: int = 32, autocast=None, compile: bool = False, *,
                 layout=None) -> None:
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"Expected `n_samples` to be a positive int, but got {n_samples!r}.")
        super().__init__(model, target_layer, input_size, channel_softmax=True, chunk_size=chunk_size,
                         autocast=autocast, compile=compile, layout=layout)
        self.n_samples, self.schedule = n_samples, check_choice(schedule, "schedule", SCHEDULES)

    def weights(self, inputs: CAMInputs) -> Tensor:
        """``(B, k, C, 1, 1)`` weights of the ``(B, k)`` targets, from the same masked forwards."""
        acts, images, classes = inputs.activations, inputs.images, inputs.targets
        flat = acts.flatten(2)
        live = flat.amax(dim=2) > flat.amin(dim=2)  # (B, C) non-constant channels
        coefficients = [c for c in integration_coefficients(self.n_samples, self.schedule).tolist() if c > 0]
        scores = acts.new_zeros(len(acts), classes.shape[1], acts.shape[1])
        for chunk in live.nonzero().split(self.chunk_size):
            b, k = chunk.unbind(dim=1)
            masked = images[b] * normalized_masks(acts[b, k], images.shape[-2:])
            for c in coefficients:
                scores[b, :, k] += self._masked_forward(c * masked).gather(1, classes[b]).to(scores.dtype)
        if not live.all():
            zero = self._masked_forward(torch.zeros_like(images[:1]))[0][classes].to(scores.dtype)
            scores = torch.where(live[:, None], scores, len(coefficients) * zero.unsqueeze(2))
        return (scores / self.n_samples).softmax(dim=2).view(*scores.shape, 1, 1)
