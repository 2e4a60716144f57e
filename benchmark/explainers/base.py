"""The one base class every explainer derives from.

A method overrides a single function:

* :meth:`BaseExplainer.weights` for CAM methods: the weights that multiply the target layer's
  activations, ``cam = sum_k weights_k * A_k`` (shape ``(B, C, 1, 1)`` for channel weights or
  ``(B, C, h, w)`` for element-wise weights such as Layer-CAM and HiResCAM);
* :meth:`BaseExplainer.raw_maps` for baselines that build a map without the model's weights.

The base does the rest, identically for every method: input checks, the hooked forward, gradients
``dS_c/dA`` by :func:`torch.autograd.grad` to the hooked activation only (the score ``S_c`` is the
logit of the target class), and the post-processing of NOTES.md §4 (:func:`normalize_maps`). Every
layout of the layer's output (NCHW, NHWC, prefix tokens + patch grid, see
:mod:`benchmark.explainers.layouts`) goes through one adapter in :meth:`BaseExplainer.hook_layer`:
methods see ``(B, C, h, w)`` activations and gradients, and what they return (e.g. Ablation-CAM's
ablated activations) goes back to the network in the layer's own layout. The hook returns a clone of
the layer's output, so in-place operations after the layer (DenseNet's ``F.relu(inplace=True)``,
ResNet's ``out += identity``) modify the clone, never the activations nor the tensor the gradients
are taken with respect to. The part of the network before the layer runs without an autograd graph;
parameter ``.grad`` fields are never written; train/eval flags and hooks are restored in
``finally``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, ContextManager, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark._utils import eval_mode
from benchmark.explainers.layers import resolve_layer
from benchmark.explainers.layouts import Layout

__all__ = ["BaseExplainer", "CAMInputs", "check_maps", "map_status", "normalize_maps"]


def normalize_maps(maps: Tensor, size: Tuple[int, int]) -> Tensor:
    """ReLU, bilinear upsampling to ``size`` and per-image min-max to ``[0, 1]``.

    Policy: a constant map (all zero included) becomes all zero; a map with a non-finite value
    becomes all NaN so that metrics can count it as invalid. No epsilon is added: the result
    does not depend on the scale of the map.

    Args:
        maps: ``(B, h, w)`` raw maps.
        size: output ``(H, W)``.

    Returns:
        ``(B, H, W)`` float32 maps in ``[0, 1]``.

    Examples:
        >>> normalize_maps(torch.tensor([[[-1.0, 2.0], [4.0, 6.0]]]), (2, 2))
        tensor([[[0.0000, 0.3333],
                 [0.6667, 1.0000]]])
    """
    finite = torch.isfinite(maps.flatten(1)).all(dim=1)  # before the ReLU, which maps -inf to 0
    maps = F.relu(maps.float()).unsqueeze(1)
    low, high = maps.flatten(1).aminmax(dim=1)
    constant = low == high  # decided before upsampling, whose rounding would fake a tiny range
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    flat = maps.flatten(1)
    low, high = flat.aminmax(dim=1)
    span = (high - low).unsqueeze(1)
    out = torch.where(span > 0, (flat - low.unsqueeze(1)) / span, torch.zeros_like(flat))
    out[constant] = 0.0
    out[~finite] = float("nan")
    return out.view(-1, *size)


def map_status(maps: Tensor) -> List[str]:
    """Per map: ``"not_finite"`` (a NaN/inf value: every metric of the sample is undefined), ``"constant"``
    (all zero after :func:`normalize_maps`: it ranks nothing) or ``"ok"``; counted in the leaderboard.

    Examples:
        >>> map_status(torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]], [[float("nan"), 0.0]]]))
        ['ok', 'constant', 'not_finite']
    """
    flat = maps.detach().flatten(1)
    not_finite = ~torch.isfinite(flat).all(dim=1)
    constant = flat.amax(dim=1) == flat.amin(dim=1)
    return ["not_finite" if bad else "constant" if const else "ok"
            for bad, const in zip(not_finite.tolist(), constant.tolist())]


def check_maps(method: str, maps: Any, images: Tensor) -> None:
    """Refuse maps that are not one ``(H, W)`` map per image, naming the method (a user explainer's bug).

    Examples:
        >>> check_maps("mycam", torch.zeros(2, 4, 4), torch.zeros(2, 3, 8, 8))
        Traceback (most recent call last):
        ...
        ValueError: Explainer 'mycam' returned maps of shape (2, 4, 4); expected (B, H, W) = (2, 8, 8), one map per \
image at the input's size (BaseExplainer.__call__ upsamples and normalises raw maps).
    """
    expected = (images.shape[0], *images.shape[-2:])
    if not isinstance(maps, Tensor) or tuple(maps.shape) != tuple(expected):
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"Explainer {method!r} returned maps of shape {shape}; expected (B, H, W) = {expected}, one "
                         "map per image at the input's size (BaseExplainer.__call__ upsamples and normalises raw "
                         "maps).")


@dataclass
class CAMInputs:
    """Everything :meth:`BaseExplainer.weights` may use, for one batch."""

    images: Tensor  #: ``(B, C, H, W)`` model inputs
    targets: Tensor  #: ``(B,)`` explained classes
    logits: Tensor  #: ``(B, K)`` model outputs on ``images``
    activations: Tensor  #: ``(B, C', h, w)`` target-layer output (detached), whatever the layer's layout
    gradients: Optional[Tensor]  #: ``dS_target/dA``, same shape, or None if unused
    indices: Optional[Tensor]  #: ``(B,)`` dataset indices seeding stochastic methods


class BaseExplainer:
    """Base of every explainer; see the module docstring.

    Args:
        model: the classifier, ``(B, C, H, W) -> (B, K)`` logits.
        target_layer: dotted module name, a module of ``model``, or ``None`` (papers' layer or
            auto-detection, see :mod:`benchmark.explainers.layers`).
        input_size: ``(C, H, W)`` used to trace the model for auto-detection; also the
            number of channels the images must have.
        layout: the target layer's layout, ``"nchw"``, ``"nhwc"``, ``"tokens"``, ``"tokens:P"``,
            ``"tokens:P:HxW"``, or a reshape function ``output -> (B, C, h, w)`` / its import path
            ``"package.module:function"`` (:mod:`benchmark.explainers.reshape`); ``None`` decides it
            from the model and the layer's output
            (:func:`~benchmark.explainers.layouts.detect_layout`), refusing ambiguous cases.
    """

    name: ClassVar[str] = ""  #: registry name, set by ``@register_explainer``
    #: ``(B,)`` maximum of each ReLU'd raw map of the last call, before the min-max normalisation
    last_raw_max: Optional[Tensor] = None
    #: ``(B, K)`` logits of the last call's images when the call ran the model on them unchanged (the default
    #: :meth:`raw_maps`), else None: the module reads the probabilities of ``x * CAM`` from there
    clean_logits: Optional[Tensor] = None
    uses_gradients: ClassVar[bool] = True  #: ``weights`` needs ``CAMInputs.gradients``
    uses_layer: ClassVar[bool] = True  #: baselines that need no layer set this to False
    #: part of the default method set of ``cam-bench run`` / ``ExplainerModule`` (:func:`default_explainers`);
    #: the costly pixel-attribution methods run only when named
    in_default_run: ClassVar[bool] = True
    #: the map does not depend on the explained class: the module reuses it for the other top-k classes
    class_independent: ClassVar[bool] = False
    #: ``weights`` takes ``(B, k)`` targets (always: :meth:`raw_maps` passes ``(B, 1)``) and returns
    #: ``(B, k, C, 1, 1)``; the masked forwards score every class at once, and
    #: :meth:`class_maps` gives the maps of several classes per image from one call (the pass model,
    #: :mod:`benchmark.runtime.pass_model`, counts no top-k pass for it or for a class-independent method)
    scores_every_class: ClassVar[bool] = False

    #: the target layer's layout (``None`` for methods that use no layer)
    layout: Optional[Layout] = None

    def __init__(self, model: nn.Module, target_layer: Union[str, nn.Module, None] = None,
                 input_size: Sequence[int] = (3, 224, 224), *, layout: Optional[str] = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be a torch.nn.Module, but got {type(model).__name__}.")
        self.model = model
        self.input_size = tuple(int(v) for v in input_size)
        if len(self.input_size) != 3:
            raise ValueError(f"Expected `input_size` to be (C, H, W), but got {tuple(input_size)}.")
        if self.uses_layer:
            self.target_layer, self.layout = resolve_layer(model, target_layer, self.input_size, layout)
        else:
            self.target_layer = "input"

    def __repr__(self) -> str:
        layout = "" if self.layout is None or self.layout.kind == "nchw" else f", layout='{self.layout}'"
        return f"{type(self).__name__}(target_layer={self.target_layer!r}{layout})"

    # ----------------------------------------------------------------- the overridable parts
    def weights(self, inputs: CAMInputs) -> Tensor:
        """Weights multiplying the activations (override in CAM methods)."""
        raise NotImplementedError(f"{type(self).__name__} must override `weights` or `raw_maps`.")

    def raw_maps(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor]) -> Tensor:
        """Un-normalised ``(B, h, w)`` maps; by default ``sum_k weights_k * A_k``."""
        if self.scores_every_class:  # one class of :meth:`raw_class_maps`
            return self.raw_class_maps(images, None if targets is None else targets[:, None], indices)[:, 0]
        inputs = self.forward_layer(images, targets, indices, self.uses_gradients)
        self.clean_logits = inputs.logits
        return (self.weights(inputs) * inputs.activations).sum(dim=1)

    # ----------------------------------------------------------------------- the public call
    def __call__(self, images: Tensor, targets: Optional[Tensor] = None,
                 indices: Optional[Tensor] = None) -> Tensor:
        """Explain ``targets`` (default: the predicted classes) for ``images``.

        Args:
            images: ``(B, C, H, W)`` floating-point model inputs.
            targets: ``(B,)`` integer classes, or ``None`` for the model's predictions.
            indices: ``(B,)`` integer dataset indices; stochastic methods seed each sample's
                noise with (seed, index) so maps do not depend on batching or world size.

        Returns:
            ``(B, H, W)`` float32 maps in ``[0, 1]`` on the images' device, without autograd graph.
        """
        self.clean_logits = None
        maps = self.unnormalized_maps(images, targets, indices)
        self.last_raw_max = maps.flatten(1).relu().amax(dim=1).float()  # before the min-max
        return normalize_maps(maps, tuple(images.shape[-2:]))

    def unnormalized_maps(self, images: Tensor, targets: Optional[Tensor] = None,
                          indices: Optional[Tensor] = None) -> Tensor:
        """The checked call of :meth:`raw_maps` (eval mode, outside inference mode, no graph kept) that
        ``__call__`` normalises: ``(B, h, w)`` maps before ReLU, upsampling and min-max."""
        images = self._check_images(images)
        targets = self._check_vector(targets, "targets", len(images))
        indices = self._check_vector(indices, "indices", len(images))
        with eval_mode(self.model), torch.inference_mode(False), torch.no_grad():
            if images.is_inference():
                images = images.clone()
            targets = targets.clone() if targets is not None and targets.is_inference() else targets
            return self.raw_maps(images, targets, indices).detach()

    def class_maps(self, images: Tensor, classes: Tensor, indices: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Maps of several classes per image: ``(B, k)`` classes -> ``(B, k, H, W)`` maps as :meth:`__call__` gives
        them (bitwise) and their ``(B, k)`` raw maxima (:attr:`last_raw_max`). A method that
        ``scores_every_class`` computes them from one call's forwards, any other from one call per column.
        """
        if not isinstance(classes, Tensor) or classes.ndim != 2 or len(classes) != len(images):
            raise ValueError(f"Expected `classes` of shape ({len(images)}, k), but got "
                             f"{tuple(getattr(classes, 'shape', ()))}.")
        if not self.scores_every_class:
            maps = [(self(images, classes[:, j], indices), self.last_raw_max) for j in range(classes.shape[1])]
            return torch.stack([m for m, _ in maps], 1), torch.stack([r for _, r in maps], 1)
        images = self._check_images(images)
        indices = self._check_vector(indices, "indices", len(images))
        with eval_mode(self.model), torch.inference_mode(False), torch.no_grad():
            images = images.clone() if images.is_inference() else images
            raw = self.raw_class_maps(images, classes.clone(), indices).detach()
        self.last_raw_max = raw.flatten(2).relu().amax(dim=2).float()
        maps = torch.stack([normalize_maps(raw[:, j], tuple(images.shape[-2:])) for j in range(raw.shape[1])], 1)
        return maps, self.last_raw_max

    def raw_class_maps(self, images: Tensor, classes: Optional[Tensor], indices: Optional[Tensor]) -> Tensor:
        """Un-normalised ``(B, k, h, w)`` maps of ``(B, k)`` classes (``None``: the predicted ones, ``k = 1``) from
        one call's forwards, for a method that ``scores_every_class`` (its :meth:`raw_maps` is this with ``k = 1``);
        by default ``sum_c weights_{k, c} * A_c`` with the ``(B, k, C, 1, 1)`` weights of the ``(B, k)`` targets."""
        inputs = self.forward_layer(images, None if classes is None else classes[:, 0], indices, self.uses_gradients)
        self.clean_logits = inputs.logits
        inputs.targets = inputs.targets[:, None] if classes is None else self._check_classes(classes, inputs.logits)
        weights = self.weights(inputs)
        return torch.stack([(weights[:, j] * inputs.activations).sum(dim=1) for j in range(inputs.targets.shape[1])], 1)

    # ------------------------------------------------------------------------ shared helpers
    @contextlib.contextmanager
    def hook_layer(self, fn: Callable[[Tensor], Tensor], image_hw: Sequence[int]) -> Iterator[None]:
        """Replace the target layer's output by ``fn(output)`` while the context is open.

        ``fn`` sees and returns the ``(B, C, h, w)`` view of the output (:attr:`layout`); its result goes
        back to the network in the layer's own layout (prefix tokens unchanged).
        """
        layer = self.model.get_submodule(self.target_layer)
        layout = self.layout

        def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            expected = {"tokens": 3, "nchw": 4, "nhwc": 4}.get(layout.kind)  # a reshape checks its own result
            if not isinstance(output, Tensor) or (expected is not None and output.ndim != expected):
                shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
                raise ValueError(
                    f"Expected target layer {self.target_layer!r} to output a {expected}-D tensor (layout "
                    f"'{layout}'), but got {shape}.")
            return layout.from_nchw(fn(layout.to_nchw(output.detach(), image_hw)), output.detach())

        handle = layer.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def forward_layer(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor],
                      with_gradients: bool) -> CAMInputs:
        """One hooked forward (and backward to the layer when ``with_gradients``)."""
        store: List[Tensor] = []

        def keep(output: Tensor) -> Tensor:
            act = output.detach().requires_grad_(with_gradients)
            store.append(act)
            if with_gradients:  # build the graph from the layer on only
                torch.set_grad_enabled(True)
            tail.enter_context(self.tail_context())
            return act.clone()

        with contextlib.ExitStack() as tail, self.hook_layer(keep, images.shape[-2:]), torch.no_grad():
            logits = self.model(images)
            if not store:
                raise ValueError(f"Target layer {self.target_layer!r} was not called by the forward pass.")
            if store[-1].shape[0] != images.shape[0]:  # e.g. a position embedding: the same tensor for any batch
                raise ValueError(f"Expected target layer {self.target_layer!r} to give one activation per image, but "
                                 f"got shape {tuple(store[-1].shape)} for {images.shape[0]} images: its first "
                                 "dimension is not the batch; choose a layer computed from each image.")
            logits = self._check_logits(logits, images)
            targets = self._check_classes(targets, logits)
            grads = self.score_gradients(logits, targets, store[-1]) if with_gradients else None
        return CAMInputs(images, targets, logits.detach(), store[-1].detach(), grads, indices)

    def tail_context(self) -> ContextManager[object]:
        """The context the layers after the target layer run in (entered at the layer, left after
        :meth:`score_gradients`); none by default. Shapley-CAM's double backward needs the math attention kernel
        there, while the layers before the target run on the fused kernels as in every other method."""
        return contextlib.nullcontext()

    def score_gradients(self, logits: Tensor, targets: Tensor, activations: Tensor) -> Tensor:
        """``dS_c/dA`` of the target logits (the graph runs from ``activations``, the hooked layer output); a
        method with another score or derivative overrides it (Shapley-CAM: ReST and a Hessian term)."""
        return torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), activations)[0]

    def layer_gradients(self, images: Tensor, targets: Tensor) -> Tuple[Tensor, Tensor]:
        """Activations and gradients of the target class score at the layer, for ``images``."""
        out = self.forward_layer(images, targets, None, True)
        return out.activations, out.gradients

    @staticmethod
    def sample_generators(indices: Optional[Tensor], batch_size: int, seed: int) -> List[torch.Generator]:
        """One CPU generator per sample, seeded by (seed, dataset index or batch position)."""
        keys = indices.tolist() if indices is not None else range(batch_size)
        return [torch.Generator().manual_seed(int(seed) * 1_000_003 + int(k)) for k in keys]

    # ------------------------------------------------------------------------- input checks
    def _check_images(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"Expected `images` to be a torch.Tensor, but got {type(images).__name__}.")
        if not images.is_floating_point():
            raise TypeError(f"Expected `images` to be floating point, but got {images.dtype}.")
        channels = self.input_size[0]
        if images.ndim != 4 or images.shape[1] != channels or images.shape[0] == 0:
            raise ValueError(
                f"Expected `images` to have shape (B, {channels}, H, W) with B >= 1, but got "
                f"{tuple(images.shape)}.")
        return images

    @staticmethod
    def _check_vector(values: Optional[Tensor], name: str, batch: int) -> Optional[Tensor]:
        if values is None:
            return None
        if not isinstance(values, Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor or None, but got {type(values).__name__}.")
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"Expected `{name}` to be an integer tensor, but got {values.dtype}.")
        if values.shape != (batch,):
            raise ValueError(f"Expected `{name}` to have shape ({batch},), but got {tuple(values.shape)}.")
        return values.long()

    @staticmethod
    def _check_logits(logits: object, images: Tensor) -> Tensor:
        if not isinstance(logits, Tensor) or logits.ndim != 2 or len(logits) != len(images):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"Expected the model to return (B, num_classes) logits, but got {shape}.")
        return logits

    @staticmethod
    def _check_classes(targets: Optional[Tensor], logits: Tensor) -> Tensor:
        if targets is None:
            return logits.argmax(dim=1)
        targets = targets.to(logits.device)
        bad = (targets < 0) | (targets >= logits.shape[1])
        if bad.any():
            raise ValueError(
                f"Expected `targets` in [0, {logits.shape[1] - 1}], but got "
                f"{targets[bad].tolist()}.")
        return targets
