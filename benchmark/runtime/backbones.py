"""Backbone factory: any torchvision, timm or Hugging Face classifier, with the preprocessing it expects.

Naming (``create_backbone(name)``):

* ``"torchvision/<name>"`` -- a torchvision classification model (``resnet18``, ``vgg16_bn``, ...);
* ``"timm/<name>"`` -- a timm model, optionally with a pretrained tag (``timm/resnet18.a1_in1k``);
* ``"synthetic/<name>"`` -- a shipped SyntheticShapes model (``res_cnn``, ``vgg_cnn``, ``conv_vit``, ``plain_cnn``,
  ``mobile_cnn``, ...; see :mod:`benchmark.synthetic`), 8 classes, 128 x 128 inputs;
* ``"digits/<name>"`` -- a digit classifier (``mnist_cnn``, PyTorch's MNIST-example CNN; see
  :mod:`benchmark.digits`), 10 classes, 1 x 28 x 28 inputs with the MNIST preprocessing;
* ``"hf/<directory-or-repo-id>"`` -- a Hugging Face ``transformers`` image classifier from a local
  directory (``hf//abs/path``, ``hf/./models/vit``) or, when no such directory exists, from the
  snapshot of a hub repo in the local Hugging Face cache (``hf/google/vit-base-patch16-224``), never
  downloaded; see :mod:`benchmark.runtime.hf_backbone` (its weights: ``None``/``"default"`` pretrained,
  ``"random"``, or a path; its preprocessing from the repo's ``preprocessor_config.json``);
* a bare ``"<name>"`` -- torchvision's model if torchvision has one by that name, else timm's.

Weights (``weights=``):

* ``None`` -- random initialisation;
* ``"default"`` -- the library's default pretrained weights (torchvision's ``DEFAULT`` enum,
  timm's default tag), or a torchvision enum name such as ``"IMAGENET1K_V2"``. They are read
  from the local cache only -- the torch hub cache (``$TORCH_HOME/hub/checkpoints``) or the
  Hugging Face hub cache -- never downloaded; when missing, a ``FileNotFoundError`` names the
  file to place there;
* a path to a local checkpoint (``.pth``/``.pt``/``.ckpt``/``.safetensors``): a state dict, or a
  dict holding one under ``state_dict``/``model`` (``module.``/``model.`` prefixes stripped). For GoogLeNet
  and Inception-v3, torchvision's own pretrained file (its name, or its SHA-256 prefix) gets
  ``transform_input=True`` as torchvision's builder sets it; any other file the random-init default (False).

The model comes back in eval mode with frozen parameters, with its :class:`Preprocessing`
taken from torchvision's weights transforms or timm's pretrained config (timm's ``crop_mode`` "center" is
``resize_mode="shorter"``, "squash" is ``resize_mode="squash"``: both resize to ``floor(img_size / crop_pct)``
then centre-crop ``img_size``). A timm config that this Preprocessing cannot reproduce (``crop_mode``
``border``, a non-square ``input_size``) is refused.

Synthetic backbones exist to be used trained: for them ``weights=None`` (and ``"default"``) loads
the checkpoint shipped in the package, ``"random"`` gives a random initialisation, and a path
loads that file. Digits backbones ship no weights: ``None`` (or ``"random"``) is a random
initialisation and a path loads a checkpoint of ``python -m benchmark.digits.train``.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import os
import zlib
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import timm
import torch
import torchvision

from benchmark.runtime.checkpoints import is_checkpoint_path, load_checkpoint
from benchmark.runtime.preprocessing import Backbone, Preprocessing, mnist_preprocessing, synthetic_preprocessing

__all__ = ["Backbone", "Preprocessing", "create_backbone", "list_backbones", "load_checkpoint"]


def list_backbones(source: str = "torchvision") -> list:
    """Model names of ``source`` ("torchvision", "timm", "synthetic" or "digits").

    ``"hf"`` has no registry (any local directory or cached repo id) and raises ``ValueError``.

    Examples:
        >>> "resnet18" in list_backbones("torchvision")
        True
    """
    if source == "torchvision":
        return torchvision.models.list_models(module=torchvision.models)
    if source == "timm":
        return timm.list_models()
    if source == "synthetic":
        from benchmark.synthetic.models import SYNTHETIC_MODELS

        return sorted(SYNTHETIC_MODELS)
    if source == "digits":
        from benchmark.digits.models import DIGITS_MODELS

        return sorted(DIGITS_MODELS)
    if source == "hf":
        raise ValueError("Expected `source` to be a source with a model registry, but got 'hf': Hugging Face "
                         "backbones are named by a local directory or a cached hub repo id, `hf/<dir-or-repo-id>`.")
    raise ValueError(f"Expected `source` to be 'torchvision', 'timm', 'synthetic' or 'digits', but got {source!r}.")


def _split_name(name: str) -> Tuple[str, str]:
    if not isinstance(name, str) or not name:
        raise TypeError(f"Expected the backbone name to be a non-empty str, but got {name!r}.")
    if name.startswith("hf/"):  # the rest is a path or an owner/repo id, slashes included
        if name == "hf/":
            raise KeyError("Expected 'hf/<directory-or-repo-id>', but got 'hf/' with nothing after it.")
        return "hf", name[len("hf/"):]
    source, _, model = name.rpartition("/")
    if source in ("torchvision", "timm"):
        return source, model
    if source in ("synthetic", "digits"):
        if model not in list_backbones(source):
            raise KeyError(f"Unknown {source} backbone {name!r}; valid: "
                           f"{[f'{source}/{n}' for n in list_backbones(source)]}.")
        return source, model
    if source:
        raise KeyError(f"Unknown backbone source {source!r} in {name!r}; valid: 'torchvision/…', 'timm/…', "
                       "'synthetic/…', 'digits/…', 'hf/…'.")
    if model in list_backbones("torchvision"):
        return "torchvision", model
    if timm.is_model(model):
        return "timm", model
    close = difflib.get_close_matches(model, list_backbones("torchvision") + timm.list_models(), n=5)
    raise KeyError(f"Unknown backbone {name!r}: not a torchvision or timm model. Close matches: {close}.")


def _hub_checkpoint(filename: str, url: str) -> Path:
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"Pretrained weights not found at {path}. No download is attempted: fetch {url} on a "
            f"machine with network access and place it there (or set TORCH_HOME), or pass "
            f"`weights='/path/to/checkpoint'`.")
    return path


def _torchvision_file(path: str, enum: Any) -> bool:
    """Whether ``path`` is one of ``enum``'s pretrained files: the same file name as its url, or the same content.

    torchvision names each file ``<name>-<first 8 hex digits of its SHA-256>.pth`` (what ``torch.hub`` checks),
    so a renamed copy is recognised by its hash.
    """
    names = {Path(member.url).name: Path(member.url).stem.rpartition("-")[2] for member in enum}
    if Path(path).name in names:
        return True
    if not Path(path).is_file():
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return any(len(prefix) >= 8 and digest.hexdigest().startswith(prefix) for prefix in names.values())


def _torchvision(name: str, weights: Optional[str], num_classes: Optional[int]) -> Backbone:
    enum = torchvision.models.get_model_weights(name)
    default = enum.DEFAULT
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):  # explicit init: no FutureWarning about the default changing
        kwargs["init_weights"] = True
    if weights is not None and not is_checkpoint_path(weights):
        key = "DEFAULT" if weights.lower() == "default" else weights
        if key not in enum.__members__:
            raise ValueError(f"Unknown weights {weights!r} for {name}: valid {list(enum.__members__)} or a file path.")
        default = enum[key]
        _hub_checkpoint(Path(default.url).name, default.url)  # in the local cache, or a clear error (no download)
        kwargs.pop("init_weights", None)
        # torchvision's own builder sets what pretrained weights need (e.g. GoogLeNet's transform_input=True)
        # and reads the file from the hub cache
        model = torchvision.models.get_model(name, weights=default, **kwargs)
    else:
        if is_checkpoint_path(weights) and name in ("googlenet", "inception_v3") and _torchvision_file(weights, enum):
            kwargs["transform_input"] = True  # what torchvision's builder sets for its own file (not in the state dict)
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        if is_checkpoint_path(weights):
            load_checkpoint(model, weights)
    tf = default.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    return Backbone(model, Preprocessing((3, crop, crop), resize, crop, tuple(tf.mean), tuple(tf.std),
                                         tf.interpolation.value))


#: timm ``crop_mode`` values cam-bench refuses, and what timm does for them (timm.data.transforms_factory);
#: "center" and "squash" become ``resize_mode`` "shorter" and "squash"
_CROP_MODES = {"border": "resizes the longer side and pads the borders to a square"}


def _timm_hub_file(cfg: Dict[str, Any]) -> Path:
    from huggingface_hub import try_to_load_from_cache

    repo = cfg.get("hf_hub_id")
    if repo:
        for filename in (cfg.get("hf_hub_filename") or "model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return Path(found)
    if cfg.get("url"):
        return _hub_checkpoint(Path(cfg["url"]).name, cfg["url"])
    raise FileNotFoundError(
        f"Pretrained weights for timm model {cfg.get('architecture')} not in the Hugging Face cache "
        f"(repo {repo!r}, file model.safetensors). No download is attempted: run "
        f"`huggingface-cli download {repo}` on a machine with network access and copy the cache "
        f"(HF_HOME), or pass `weights='/path/to/checkpoint'`.")


def _timm(name: str, weights: Optional[str], num_classes: Optional[int]) -> Backbone:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = timm.create_model(name, pretrained=False, **kwargs)
    cfg = timm.data.resolve_data_config({}, model=model)
    channels, height, width = cfg["input_size"]
    tag = f"{name.partition('.')[0]}.{model.pretrained_cfg.get('tag')}"
    if height != width:
        raise ValueError(f"Expected a square input size for timm/{name}, but its pretrained config ({tag}) gives "
                         f"{height} x {width}, which cam-bench's Preprocessing (square centre crop) cannot feed; "
                         "choose another model or tag with a square input_size.")
    crop_mode = cfg.get("crop_mode") or "center"
    if crop_mode not in ("center", "squash"):
        raise ValueError(f"Expected timm's crop_mode 'center' or 'squash' for timm/{name}, but its pretrained config "
                         f"({tag}) uses {crop_mode!r} (timm then {_CROP_MODES.get(crop_mode, 'does another step')}), "
                         "which cam-bench's Preprocessing (resize the shorter side or squash, centre-crop) does not "
                         "reproduce; choose a tag with crop_mode 'center' or 'squash' (see timm.list_pretrained).")
    if is_checkpoint_path(weights):
        load_checkpoint(model, weights)
    elif weights is not None:
        if weights.lower() != "default":
            raise ValueError(f"Expected `weights` to be None, 'default' or a file path for timm, but got {weights!r}.")
        path = _timm_hub_file(model.pretrained_cfg)
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    resize = int(math.floor(height / cfg["crop_pct"]))  # timm's scale_size (transforms_imagenet_eval)
    mode = "squash" if crop_mode == "squash" else "shorter"  # squash: Resize((scale_size, scale_size)), CenterCrop
    return Backbone(model, Preprocessing((channels, height, width), resize, height, tuple(cfg["mean"]),
                                         tuple(cfg["std"]), cfg["interpolation"], mode))


def _synthetic(name: str, weights: Optional[str], num_classes: Optional[int]) -> Backbone:
    from benchmark.synthetic import shipped_checkpoint
    from benchmark.synthetic.models import build_synthetic_model

    model = build_synthetic_model(name, 8 if num_classes is None else num_classes)
    if weights is None or weights == "default":
        load_checkpoint(model, shipped_checkpoint(name))
    elif weights != "random":
        if not is_checkpoint_path(weights):
            raise ValueError(f"Expected `weights` to be None/'default' (shipped), 'random' or a file path for "
                             f"synthetic/{name}, but got {weights!r}.")
        load_checkpoint(model, weights)
    # channels-last weights: 1.2-2.9x faster CPU forwards for these small nets (inputs may stay NCHW)
    return Backbone(model.to(memory_format=torch.channels_last), synthetic_preprocessing(128))


def _digits(name: str, weights: Optional[str], num_classes: Optional[int]) -> Backbone:
    from benchmark.digits.models import build_digits_model

    model = build_digits_model(name, 10 if num_classes is None else num_classes)
    if is_checkpoint_path(weights):
        load_checkpoint(model, weights)
    elif weights not in (None, "random"):
        raise ValueError(f"Expected `weights` to be None/'random' (random init) or a checkpoint path for digits/{name} "
                         f"(no weights are shipped: train them with `python -m benchmark.digits.train --root DATA "
                         f"--out checkpoints/{name}.pt`), but got {weights!r}.")
    return Backbone(model, mnist_preprocessing())


def _hf(spec: str, weights: Optional[str], num_classes: Optional[int]) -> Backbone:
    from benchmark.runtime.hf_backbone import create_hf_backbone  # imports transformers only when asked for

    return create_hf_backbone(spec, weights, num_classes)


def create_backbone(name: str, weights: Union[str, os.PathLike, None] = None,
                    num_classes: Optional[int] = None, seed: int = 0) -> Backbone:
    """Build a torchvision, timm or Hugging Face classifier (eval mode, frozen) and its preprocessing.

    Args:
        name: ``"torchvision/<name>"``, ``"timm/<name>"``, ``"hf/<dir-or-repo-id>"`` or a bare name (see
            module docstring).
        weights: ``None`` (random init; the shipped checkpoint for ``synthetic/``, the pretrained weights for
            ``hf/``), ``"default"``, a torchvision enum name, ``"random"`` (``synthetic/``, ``digits/`` and
            ``hf/`` only), or a file path.
        num_classes: classifier size for random init or a local checkpoint (default: 1000; ``hf/``: the
            config's ``num_labels``).
        seed: seed of random initialisation (``cam-bench run --seed``).

    Random initialisation is seeded by ``seed`` plus the CRC-32 of ``"source/name"`` (on a forked RNG
    that leaves the caller's untouched), so the same name and seed build the same model in every run,
    resume and process, and two backbones of one run are not initialised alike.

    Returns:
        ``Backbone(model, preprocessing)``.

    Examples:
        >>> model, prep = create_backbone("resnet18")
        >>> model.training, prep.crop_size, prep.resize_size, prep.interpolation
        (False, 224, 256, 'bilinear')
        >>> create_backbone("timm/resnet18").preprocessing.interpolation
        'bicubic'
    """
    source, model_name = _split_name(name)
    weights = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if weights is not None and not isinstance(weights, str):
        raise TypeError(f"Expected `weights` to be None, a str or a path, but got {type(weights).__name__}.")
    build = {"torchvision": _torchvision, "timm": _timm, "synthetic": _synthetic, "digits": _digits,
             "hf": _hf}[source]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"Expected `seed` to be an int, but got {type(seed).__name__}.")
    with torch.random.fork_rng(devices=[]):  # random init depends on name and seed only: runs, resumes, ranks agree
        torch.manual_seed(zlib.crc32(f"{source}/{model_name}".encode()) + seed)
        model, preprocessing = build(model_name, weights, num_classes)
    model.eval().requires_grad_(False)
    return Backbone(model, preprocessing)
