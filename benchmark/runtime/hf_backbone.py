"""Hugging Face image classifiers as backbones: ``create_backbone("hf/<directory-or-repo-id>")``.

``hf/<spec>`` loads ``transformers.AutoModelForImageClassification`` from ``<spec>`` when it is an
existing directory (``hf//abs/path``, ``hf/./models/vit``), else from the snapshot of the hub repo
``<spec>`` (``hf/google/vit-base-patch16-224``) in the local Hugging Face cache (``HF_HOME``).
Nothing is ever downloaded; a missing directory, repo or file raises ``FileNotFoundError`` saying
how to get it.

:class:`HFClassifier` wraps the model (``forward(pixel_values) -> logits``; the HF model is ``.model``,
so layer names read ``model.<hf name>``) and tells the explainers, by ``config.model_type``, where the
patch grid starts (``num_prefix_tokens``) and which layer Grad-CAM explains (``default_target_layer``:
the last encoder block's first norm, found by name so that it follows transformers' renames --
``model.vit.layers.11.layernorm_before`` in transformers 5, ``model.vit.encoder.layer.11.…`` in 4.x):

=====================================================  ===========================  ======================
``config.model_type``                                  ``num_prefix_tokens``        norm of the last block
=====================================================  ===========================  ======================
``vit``, ``vit_msn``, ``beit``, ``data2vec-vision``    1 (class token)              ``layernorm_before``
``deit``                                               2 (class + distillation)     ``layernorm_before``
``dinov2``, ``dinov2_with_registers``                  1 + ``num_register_tokens``  ``norm1``
``clip``, ``metaclip_2``                               1 (class token)              ``layer_norm1``
``ijepa``                                              0 (mean pooling)             ``layernorm_before``
``siglip``                                             0 (mean pooling)             ``layer_norm1``
anything else (``swin``, ``convnext``, ``resnet``, …)  0                            ``None``: auto-detected
=====================================================  ===========================  ======================

Weights: ``None`` / ``"default"`` -- the pretrained weights of the directory or snapshot (refused
without a classifier head, e.g. a bare ``ViTModel``); ``"random"`` -- the same config, random init;
a file path (formats as in :mod:`benchmark.runtime.backbones`) -- loaded strictly into the *inner* HF model
by transformers' own loader: its keys (``vit.…``, ``classifier.…``) as saved in ``model.safetensors``
or as in its ``state_dict()`` (transformers renames between the two), or a wrapper's state dict
(``model.`` prefixes). ``num_classes`` re-heads the model for ``"random"`` and a checkpoint; with
pretrained weights it must be ``None`` or the config's ``num_labels``. The model is cast to float32.

The :class:`~benchmark.runtime.backbones.Preprocessing` comes from the model's image processor
(``preprocessor_config.json``, see :func:`hf_preprocessing`); there is no default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.utils import validate_repo_id
from torch import nn
from transformers import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
)

from benchmark.runtime.checkpoints import is_checkpoint_path, read_checkpoint
from benchmark.runtime.preprocessing import Backbone, Preprocessing

__all__ = ["HFClassifier", "VERIFIED_PROCESSORS", "create_hf_backbone", "hf_preprocessing",
           "resolve_hf_source"]

#: ``config.model_type`` -> (class/distillation tokens before the patch grid, name of each block's first norm)
TOKEN_MODELS: Dict[str, Tuple[int, str]] = {
    **dict.fromkeys(("vit", "vit_msn", "beit", "data2vec-vision"), (1, "layernorm_before")),
    "deit": (2, "layernorm_before"), "ijepa": (0, "layernorm_before"), "siglip": (0, "layer_norm1"),
    **dict.fromkeys(("dinov2", "dinov2_with_registers"), (1, "norm1")),  # + config.num_register_tokens
    **dict.fromkeys(("clip", "metaclip_2"), (1, "layer_norm1"))}
#: PIL resampling codes (``resample`` of an image processor) -> :class:`Preprocessing` interpolation
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
#: image processors that :func:`hf_preprocessing` reproduces, each checked against its own output on an image
VERIFIED_PROCESSORS = frozenset({
    "BeitImageProcessor", "BitImageProcessor", "CLIPImageProcessor", "ConvNextImageProcessor", "DeiTImageProcessor",
    "EfficientNetImageProcessor", "LevitImageProcessor", "PoolFormerImageProcessor", "SiglipImageProcessor",
    "ViTImageProcessor"})
#: ``do_*`` steps that :func:`hf_preprocessing` translates (``do_reduce_labels`` touches segmentation labels only)
_TRANSLATED_STEPS = frozenset({"do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb",
                               "do_reduce_labels"})


def _vision_config(config: Any) -> Any:
    return getattr(config, "vision_config", None) or config


class HFClassifier(nn.Module):
    """A Hugging Face image classifier whose forward returns the logits tensor.

    Attributes:
        model: the wrapped ``*ForImageClassification`` model (layer names read ``model.<hf name>``).
        num_prefix_tokens: tokens before the patch grid in the encoder's hidden states (module table).
        default_target_layer: dotted name of the last encoder block's first norm for the token models of
            the module table, ``None`` for the others (the explainers then auto-detect the layer).

    Examples:
        >>> from transformers import ViTConfig, ViTForImageClassification
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=2, intermediate_size=64, num_labels=5)
        >>> model = HFClassifier(ViTForImageClassification(config))
        >>> model(torch.zeros(2, 3, 32, 32)).shape, model.num_prefix_tokens
        (torch.Size([2, 5]), 1)
        >>> layer = model.default_target_layer  # model.vit.layers.1.layernorm_before in transformers 5
        >>> layer.startswith("model.vit."), layer.endswith("1.layernorm_before")
        (True, True)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "config"):
            raise TypeError(f"Expected a transformers model with a `config`, but got {type(model).__name__}.")
        self.model = model
        prefix, norm = TOKEN_MODELS.get(model.config.model_type, (0, None))
        if norm is not None:  # register tokens follow the class token (DINOv2 with registers)
            prefix += int(getattr(_vision_config(model.config), "num_register_tokens", 0) or 0)
        self.num_prefix_tokens: int = prefix
        names = [name for name, _ in model.named_modules() if norm is not None and name.split(".")[-1] == norm]
        self.default_target_layer: Optional[str] = f"model.{names[-1]}" if names else None

    @property
    def config(self) -> Any:
        """The Hugging Face config of the wrapped model."""
        return self.model.config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalised images -> ``(B, num_labels)`` logits."""
        out = self.model(pixel_values=pixel_values)
        return out.logits if hasattr(out, "logits") else out[0]


def _is_repo_id(spec: str) -> bool:
    try:
        validate_repo_id(spec)
    except ValueError:  # HFValidationError: a path, not a repo id
        return False
    return True


def _no_download_fix(spec: str) -> str:
    repo = spec if _is_repo_id(spec) else "<owner>/<repo>"
    return (f"Nothing is downloaded: run `huggingface-cli download {repo}` (or `hf download {repo}`) on a machine "
            "with network access and copy its Hugging Face cache here (or set HF_HOME to it), or pass a local "
            "directory holding config.json, the weights and preprocessor_config.json as `hf//path/to/model`.")


def resolve_hf_source(spec: str) -> Path:
    """The local directory of ``hf/<spec>``: ``spec`` if it is a directory, else repo ``spec``'s cached snapshot.

    Raises:
        FileNotFoundError: neither an existing directory nor a repo id in the local Hugging Face cache.

    Examples:
        >>> try:
        ...     resolve_hf_source("./no/such/model")
        ... except FileNotFoundError as err:
        ...     print(str(err)[:50], "Nothing is downloaded" in str(err))
        Expected `hf/<spec>` to name an existing directory True
    """
    local = Path(spec).expanduser()
    if local.is_dir():
        return local
    found = try_to_load_from_cache(spec, "config.json") if _is_repo_id(spec) else None
    if not isinstance(found, str):  # None, or the cache's "known not to exist" marker
        raise FileNotFoundError(
            f"Expected `hf/<spec>` to name an existing directory or a repo id in the local Hugging Face cache "
            f"({hub_constants.HF_HUB_CACHE}), but got {spec!r}: no such directory, and no cached snapshot of that "
            f"repo. {_no_download_fix(spec)}")
    return Path(found).parent


def _side(size: Any, what: str) -> int:
    """``shortest_edge``, or the side of a square ``{height, width}``, of a size dict (or transformers' SizeDict)."""
    get = size.get if hasattr(size, "get") else lambda key: getattr(size, key, None)
    side = get("shortest_edge") or (get("height") if get("height") == get("width") else None)
    if not side:
        raise ValueError(f"Expected the image processor's `{what}` to be square ({{'height': n, 'width': n}}) or "
                         f"{{'shortest_edge': n}}, but got {size}.")
    return int(side)


def _resize_mode(name: str, size: Any, base: int, crop_pct: Any) -> str:
    """"squash" where transformers warps to ``base x base``: a ``{height, width}`` size (its backend's
    ``resize``), except PoolFormer with ``crop_pct`` (it resizes the shortest edge to ``int(height / crop_pct)``);
    ConvNeXt (``shortest_edge`` only) warps for ``base >= 384``. Otherwise "shorter"."""
    get = size.get if hasattr(size, "get") else lambda key: getattr(size, key, None)
    if name == "ConvNextImageProcessor":
        return "squash" if base >= 384 else "shorter"
    if get("shortest_edge") or (name == "PoolFormerImageProcessor" and crop_pct):
        return "shorter"
    return "squash"


def _steps(processor: Any) -> Dict[str, Any]:
    """The processor's settings (``to_dict()``, else its attributes)."""
    return dict(processor.to_dict()) if hasattr(processor, "to_dict") else dict(vars(processor))


def _untranslated(processor: Any) -> list:
    """The steps of ``processor`` that :func:`hf_preprocessing` does not reproduce (empty when it can)."""
    name, steps = type(processor).__name__, _steps(processor)
    found = [] if name in VERIFIED_PROCESSORS else [f"{name} is not a verified processor"]
    found += [f"{key}={value!r}" for key, value in sorted(steps.items())
              if value and key.startswith("do_") and key not in _TRANSLATED_STEPS]
    found += [f"{key}={steps[key]!r}" for key in ("rescale_offset",) if steps.get(key)]
    if steps.get("include_top") and name != "EfficientNetImageProcessor":
        found.append(f"include_top={steps['include_top']!r}")
    if steps.get("do_resize", True) is False:
        found.append("do_resize=False")
    return found


def hf_preprocessing(processor: Any, num_channels: int = 3) -> Preprocessing:
    """:class:`~benchmark.runtime.backbones.Preprocessing` from a Hugging Face image processor.

    Only the processors of :data:`VERIFIED_PROCESSORS` are translated (each checked against the
    processor's own output on an image, ``tests/test_backbone_preprocessing_audit.py``); any other, or one
    with a step not translated here (``do_flip_channel_order``, ``rescale_offset``, ``do_pad``, ``do_resize``
    off, ...), is refused, so that the model never sees inputs its own preprocessing would not produce.

    ``base`` is ``size["shortest_edge"]`` or the square ``size["height"]``; the crop is ``crop_size`` when
    ``do_center_crop``, else ``base``; the resize is ``base``, or ``int(base / crop_pct)`` when the processor
    has ``crop_pct`` (ConvNeXt, PoolFormer; ConvNeXt, which has no centre-crop step, warps to ``base`` for
    ``base >= 384``), or ``int(256 / 224 * base)`` for LeViT's ``shortest_edge`` (its fixed rule). A
    ``{"height", "width"}`` resize warps any image to a square in transformers, and so here
    (``resize_mode="squash"``; so does ConvNeXt at ``base >= 384``), except PoolFormer with ``crop_pct``, which
    resizes the shortest edge (``resize_mode="shorter"``, as for every ``shortest_edge`` size). ``resample``
    0/2/3 (PIL) -> nearest/bilinear/bicubic; mean 0 and std 1 when ``do_normalize`` is false; EfficientNet's
    ``include_top`` divides by ``image_std`` once more, which is the std ``std * image_std``.

    Raises:
        ValueError: an unverified processor or an untranslated step (the message says what to pass), a
            non-square size, another resampling filter or rescale factor.

    Examples:
        >>> from transformers import ConvNextImageProcessor, MobileViTImageProcessor, ViTImageProcessor
        >>> p = hf_preprocessing(ViTImageProcessor(size={"height": 32, "width": 32}))
        >>> p.input_size, p.resize_size, p.crop_size, p.mean, p.interpolation, p.resize_mode
        ((3, 32, 32), 32, 32, (0.5, 0.5, 0.5), 'bilinear', 'squash')
        >>> p = hf_preprocessing(ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875))
        >>> p.resize_size, p.crop_size, p.interpolation, p.resize_mode
        (256, 224, 'bicubic', 'shorter')
        >>> try:
        ...     hf_preprocessing(MobileViTImageProcessor())
        ... except ValueError as err:
        ...     print(str(err)[:73])
        Expected an image processor whose steps cam-bench reproduces, but got Mob
    """
    untranslated = _untranslated(processor)
    if untranslated:
        raise ValueError(
            f"Expected an image processor whose steps cam-bench reproduces, but got {type(processor).__name__} "
            f"({'; '.join(untranslated)}): the model would see inputs its own preprocessing does not produce. "
            f"Verified processors: {', '.join(sorted(VERIFIED_PROCESSORS))}. If you accept the difference, "
            "copy the model directory and write your own preprocessor_config.json there (a verified "
            '"image_processor_type" with the size, crop, mean and std you choose), then load `hf//path/to/copy`.')
    name = type(processor).__name__
    base = _side(processor.size, "size")
    center = bool(getattr(processor, "do_center_crop", False)) and getattr(processor, "crop_size", None) is not None
    crop = _side(processor.crop_size, "crop_size") if center else base
    crop_pct = getattr(processor, "crop_pct", None)
    resize = int(base / crop_pct) if crop_pct and (center or base < 384) else base
    if name == "LevitImageProcessor" and (_steps(processor).get("size") or {}).get("shortest_edge"):
        resize = int((256 / 224) * base)  # LevitImageProcessor.resize: shortest_edge -> int(256/224 * shortest_edge)
    if crop > resize:
        raise ValueError(f"Expected the image processor's crop_size ({crop}) to be at most its resize ({resize}), "
                         f"but {name} would pad; edit its preprocessor_config.json.")
    resample = getattr(processor, "resample", 2)
    value = getattr(resample, "value", resample)  # PIL int enum, or torchvision InterpolationMode ("bilinear")
    interpolation = value if isinstance(value, str) else _RESAMPLE.get(int(value))
    if interpolation not in _RESAMPLE.values():
        raise ValueError(f"Expected the image processor's `resample` to be nearest (0), bilinear (2) or bicubic (3), "
                         f"but got {resample!r}; edit `resample` in its preprocessor_config.json.")
    rescale = getattr(processor, "rescale_factor", 1 / 255) if getattr(processor, "do_rescale", True) else 1
    if abs(float(rescale) * 255 - 1) > 1e-6:
        raise ValueError(f"Expected the image processor to rescale pixels by 1/255, but got a factor {rescale}.")
    if getattr(processor, "do_normalize", True):
        mean, std = tuple(map(float, processor.image_mean)), tuple(map(float, processor.image_std))
    else:
        mean, std = (0.0,) * num_channels, (1.0,) * num_channels
    if name == "EfficientNetImageProcessor" and getattr(processor, "include_top", False):
        std = tuple(s * float(t) for s, t in zip(std, processor.image_std))  # a second division by image_std
    mode = _resize_mode(name, processor.size, base, crop_pct)
    if mode == "shorter" and not center and not crop_pct:  # transformers keeps the aspect ratio: no square input
        raise ValueError(f"{name} resizes the shortest edge to {base} without a centre crop, so transformers feeds "
                         "images of other aspect ratios at their own shape, which cam-bench's square input cannot "
                         "reproduce; give the model a processor with a centre crop (or a square {height, width} "
                         "size) in a copy of its directory, then load `hf//path/to/copy`.")
    return Preprocessing((num_channels, crop, crop), resize, crop, mean, std, interpolation, mode)


def _local(what: str, spec: str, path: Path, load, **kwargs: Any) -> Any:
    """``load(path, local_files_only=True)``; an unreadable file -> FileNotFoundError naming ``what``."""
    try:
        return load(str(path), local_files_only=True, **kwargs)
    except OSError as err:
        raise FileNotFoundError(f"Expected {what} in {str(path)!r} (hf/{spec}), but could not load it ({err}). "
                                f"{_no_download_fix(spec)}") from err


def _model_class(config: Any) -> type:
    """The ``*ForImageClassification`` class of ``config`` (the one in ``config.architectures`` when several)."""
    try:
        classes = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:
        raise ValueError(f"Expected a model type with an image-classification head in transformers, but got "
                         f"{config.model_type!r}.") from None
    if not isinstance(classes, (list, tuple)):
        return classes
    named = [cls for cls in classes if cls.__name__ in (getattr(config, "architectures", None) or [])]
    return (named or list(classes))[0]


def _load_state(config: Any, path: Path) -> nn.Module:
    """The model of ``config`` with the checkpoint at ``path`` (strict, transformers' key renaming)."""
    model, info = _model_class(config).from_pretrained(None, config=config, state_dict=read_checkpoint(path),
                                                       output_loading_info=True)
    problems = {k: sorted(map(str, info[k]))[:8] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if info[k]}
    if problems:
        raise ValueError(f"Expected checkpoint {str(path)!r} to match {type(model).__name__}, but got {problems} "
                         "(a different architecture, or pass `num_classes`?).")
    return model


def create_hf_backbone(spec: str, weights: Optional[str] = None, num_classes: Optional[int] = None) -> Backbone:
    """Load ``hf/<spec>`` (see the module docstring) as ``Backbone(HFClassifier, Preprocessing)``.

    Args:
        spec: an existing directory, or a repo id in the local Hugging Face cache.
        weights: ``None``/``"default"`` (pretrained), ``"random"`` or a checkpoint path of the inner model.
        num_classes: re-heads the model for ``"random"`` or a checkpoint; else ``None`` or ``num_labels``.

    Raises:
        FileNotFoundError: the directory, the cached repo or one of its files is missing (nothing is downloaded).
        ValueError: a bad ``weights`` / ``num_classes``, or pretrained weights without a classifier head.

    Examples:
        >>> import tempfile
        >>> from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
        >>> folder = tempfile.mkdtemp()
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
        ...                    num_attention_heads=2, intermediate_size=64, num_labels=3)
        >>> ViTForImageClassification(config).save_pretrained(folder)
        >>> _ = ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
        >>> model, prep = create_hf_backbone(folder)
        >>> model(torch.zeros(1, *prep.input_size)).shape, model.num_prefix_tokens
        (torch.Size([1, 3]), 1)
    """
    if weights not in (None, "default", "random") and not is_checkpoint_path(weights):
        raise ValueError(f"Expected `weights` to be None/'default' (pretrained), 'random' or a checkpoint path for "
                         f"hf/{spec}, but got {weights!r}.")
    path = resolve_hf_source(spec)
    processor = _local("an image processor (preprocessor_config.json)", spec, path, AutoImageProcessor.from_pretrained)
    config = _local("a model config (config.json)", spec, path, AutoConfig.from_pretrained)
    if weights in (None, "default"):
        if num_classes is not None and num_classes != config.num_labels:
            raise ValueError(f"Expected `num_classes` to be None or the pretrained head's {config.num_labels} labels "
                             f"for hf/{spec}, but got {num_classes}: pass weights='random' or a fine-tuned checkpoint "
                             "for another class count.")
        model, info = _local("weights (model.safetensors or pytorch_model.bin)", spec, path,
                             AutoModelForImageClassification.from_pretrained, output_loading_info=True)
        if info["missing_keys"]:
            raise ValueError(f"Expected hf/{spec} to hold a trained classifier, but its weights lack "
                             f"{sorted(info['missing_keys'])[:8]} (a feature extractor without a head?); pass a "
                             "fine-tuned classifier, or weights='random'.")
    else:
        if num_classes is not None:
            config.num_labels = num_classes
        model = _model_class(config)(config) if weights == "random" else _load_state(config, Path(weights))
    channels = int(getattr(_vision_config(model.config), "num_channels", 3) or 3)
    return Backbone(HFClassifier(model.float()), hf_preprocessing(processor, channels))
