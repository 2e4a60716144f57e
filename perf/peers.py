"""The peer libraries' implementations of our methods and metrics, behind one call signature.

Used only by the speed harness (they are test extras: ``pip install -e ".[test]"``). Every
adapter is ``fn(images, targets, saliency) -> None`` and builds the peer's object inside the call
and removes its hooks afterwards, so a peer's hooks never run during our measurements. Where a
peer batches its perturbed forwards, it gets our chunk size, so both run the same protocol:

* ``grad-cam`` (pytorch-grad-cam): GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM,
  ScoreCAM, AblationCAM (``AblationLayerVit`` on ViT tokens, its documented way; none on other non-NCHW layers),
  EigenCAM, EigenGradCAM, KPCA_CAM, ShapleyCAM (with our score: ``ClassifierOutputReST`` for the default ReST, and
  the math attention kernel for its whole call; none on token layers, where its Hessian term fails on the un-reshaped
  activations), FullGrad, FinerCAM (its own choice of target and references: the predicted class,
  ``targets=None``); DropInConfidence + IncreaseInConfidence for Average Drop / Increase given the map.
* ``torch-cam``: GradCAM, GradCAMpp, XGradCAM, LayerCAM, ScoreCAM, SmoothGradCAMpp, SSCAM, ISCAM, FinerCAM; its
  ``ClassificationMetric`` (Average Drop / Increase *including* its Grad-CAM map).

A target layer that is not NCHW (a ViT block's ``(B, 1 + h*w, C)`` tokens, a Swin stage's NHWC) reaches
both peers through their ``reshape_transform`` argument, the way their documentation handles ViTs (drop
the prefix tokens, reshape to the patch grid, channels first): :func:`reshape_transform`.
"""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable, Dict, Optional

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmark.explainers.layouts import Layout

__all__ = ["GRAD_CAM", "PEERS", "TORCH_CAM", "peer_explainer", "peer_metric", "reshape_transform"]

GRAD_CAM = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
            "hirescam": "HiResCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM", "eigencam": "EigenCAM",
            "eigengradcam": "EigenGradCAM", "kpcacam": "KPCA_CAM", "shapleycam": "ShapleyCAM", "fullgrad": "FullGrad",
            "finercam": "FinerCAM"}
TORCH_CAM = {"gradcam": "GradCAM", "gradcampp": "GradCAMpp", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
             "scorecam": "ScoreCAM", "smoothgradcampp": "SmoothGradCAMpp", "sscam": "SSCAM", "iscam": "ISCAM",
             "finercam": "FinerCAM"}
#: the score-weighted methods: torch-cam batches their masked forwards (our chunk size) and needs no graph
SCORE_FAMILY = ("scorecam", "sscam", "iscam")
#: metric adapters: name in our results -> what the peer computes
PEER_METRICS = {"grad-cam": "average_drop+average_increase", "torch-cam": "gradcam+average_drop+average_increase"}
PEERS = ("grad-cam", "torch-cam")

Call = Callable[[Tensor, Tensor, Optional[Tensor]], None]


def _import(peer: str):
    try:
        if peer == "grad-cam":
            import pytorch_grad_cam
            return pytorch_grad_cam
        import torchcam.methods
        return torchcam.methods
    except ImportError as err:
        raise SystemExit(f"The peer comparison needs the test extra: pip install -e '.[test]' ({err})") from err


def reshape_transform(layout: Optional[Layout], image_hw) -> Optional[Callable[[Tensor], Tensor]]:
    """The peers' ``reshape_transform`` for a layer of ``layout`` on ``image_hw`` images: ``None`` for NCHW, else
    the ``(B, C, h, w)`` view (for ``tokens:1`` on 224 x 224: ``t[:, 1:].reshape(B, 14, 14, C).permute(0, 3, 1, 2)``).

    Examples:
        >>> reshape_transform(Layout("tokens", prefix=1), (32, 32))(torch.zeros(2, 1 + 16, 5)).shape
        torch.Size([2, 5, 4, 4])
    """
    if layout is None or layout.kind == "nchw":
        return None
    return partial(layout.to_nchw, image_hw=tuple(image_hw))


def _reshape_kwarg(layout: Optional[Layout], images: Tensor) -> dict:
    """torch-cam's ``reshape_transform`` keyword, only where one is needed (torch-cam < 0.5 has none)."""
    transform = reshape_transform(layout, images.shape[-2:])
    return {} if transform is None else {"reshape_transform": transform}


def peer_explainer(peer: str, name: str, model: nn.Module, layer: str, ours: object) -> Optional[Call]:
    """``peer``'s implementation of explainer ``name`` on ``model``'s ``layer``, or ``None`` if it has none.

    ``ours`` is our explainer: its ``chunk_size`` / ``n_samples`` / ``sigma`` and its layer's layout
    (:func:`reshape_transform`) are given to the peer.
    """
    table = GRAD_CAM if peer == "grad-cam" else TORCH_CAM
    if name not in table:
        return None
    layout = getattr(ours, "layout", None)
    tokens = layout is not None and layout.kind != "nchw"
    if peer == "grad-cam" and tokens and (name == "shapleycam" or (name == "ablationcam" and layout.kind != "tokens")):
        return None  # ShapleyCAM's Hessian term reads the raw activations (no reshape_transform); AblationCAM has
        # an ablation layer for ViT tokens only
    module = _import(peer)
    cls = getattr(module, table[name])
    chunk = getattr(ours, "chunk_size", None)
    if peer == "grad-cam":
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

        # Shapley-CAM: the same score as ours (ReST by default) and the same attention kernel (the fused ones have
        # no double backward; ours runs the math kernel after the target layer)
        target_cls = ClassifierOutputReST if getattr(ours, "score", None) == "rest" else ClassifierOutputTarget
        kernel = (partial(sdpa_kernel, SDPBackend.MATH) if name == "shapleycam" else contextlib.nullcontext)

        def run(images: Tensor, targets: Tensor, saliency: Optional[Tensor] = None) -> None:
            layers = [] if name == "fullgrad" else [model.get_submodule(layer)]  # FullGrad finds its own
            extra = {}
            if name == "ablationcam" and tokens:  # its documented way for ViT blocks
                from pytorch_grad_cam.ablation_layer import AblationLayerVit
                extra["ablation_layer"] = AblationLayerVit()
            cam = cls(model=model, target_layers=layers,
                      reshape_transform=reshape_transform(layout, images.shape[-2:]), **extra)
            if chunk is not None:
                cam.batch_size = chunk
            try:
                with kernel():
                    if name == "finercam":  # no class-score targets: it picks the predicted class and its references
                        cam(input_tensor=images)
                    else:
                        cam(input_tensor=images, targets=[target_cls(int(c)) for c in targets])
            finally:
                getattr(cam, "base_cam", cam).activations_and_grads.release()
        return run

    kwargs = {}
    if name in SCORE_FAMILY:
        kwargs["batch_size"] = chunk
    if name in ("smoothgradcampp", "sscam"):
        kwargs.update(num_samples=ours.n_samples, std=ours.sigma)
    if name == "iscam":
        kwargs["num_samples"] = ours.n_samples
    if name == "finercam":
        kwargs.update(gamma=ours.alpha, num_references=ours.n_references)

    def run_torchcam(images: Tensor, targets: Tensor, saliency: Optional[Tensor] = None) -> None:
        extractor = cls(model, target_layer=layer, input_shape=tuple(images.shape[1:]),
                        **_reshape_kwarg(layout, images), **kwargs)
        try:
            with torch.set_grad_enabled(name not in SCORE_FAMILY):
                scores = model(images)
            extractor(class_idx=targets.tolist(), scores=scores)
        finally:
            extractor.remove_hooks()
    return run_torchcam


def peer_metric(peer: str, model: nn.Module, layer: str, layout: Optional[Layout] = None) -> Call:
    """``peer``'s Average Drop + Average Increase (see :data:`PEER_METRICS` for what each includes); ``layout``:
    the layer's, for torch-cam's own Grad-CAM map."""
    module = _import(peer)
    if peer == "grad-cam":
        from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        def run(images: Tensor, targets: Tensor, saliency: Optional[Tensor] = None) -> None:
            cams = saliency.cpu().numpy()
            wanted = [ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
            with torch.no_grad():
                DropInConfidence()(images, cams, wanted, model)
                IncreaseInConfidence()(images, cams, wanted, model)
        return run

    from torchcam.metrics import ClassificationMetric

    def run_torchcam(images: Tensor, targets: Tensor, saliency: Optional[Tensor] = None) -> None:
        extractor = module.GradCAM(model, target_layer=layer, input_shape=tuple(images.shape[1:]),
                                   **_reshape_kwarg(layout, images))
        try:
            ClassificationMetric(extractor, partial(torch.softmax, dim=-1)).update(images, class_idx=targets.tolist())
        finally:
            extractor.remove_hooks()
    return run_torchcam


def peer_calls(name: str, model: nn.Module, layer: str, ours: object) -> Dict[str, Call]:
    """Every peer's implementation of explainer ``name`` (peers without it are left out)."""
    calls = {peer: peer_explainer(peer, name, model, layer, ours) for peer in PEERS}
    return {peer: call for peer, call in calls.items() if call is not None}
