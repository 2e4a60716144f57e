"""Reading images from disk: any PIL-readable file to an 8-bit RGB ``PIL.Image``.

Policy (documented in the manual, docs/datamodules.md "Bad input"):

* CMYK, grayscale (``L``/``1``), palette (``P``), ``LA``/``RGBA`` -> RGB with PIL's conversion; the alpha
  channel is dropped, the colour channels are kept as stored (the torchvision/timm ImageNet
  loaders do the same);
* 16-bit integer images (``I;16*``) -> scaled to 8 bits by the range of their type (``/ 257``,
  i.e. ``* 255 / 65535``) instead of PIL's clipping at 255; float images (``F``) are taken as
  ``[0, 1]`` intensities;
* 32-bit integer images (``I``) whose values all lie in ``[0, 65535]`` are 16-bit data (older
  Pillow versions and some TIFF writers store 16-bit grey in this mode) and are scaled the same
  way. Any value outside that range raises :class:`CorruptImageError`: such an image has no fixed
  scale (dividing by its own maximum would give the same raw value a different grey level in every
  image), so convert it to 8- or 16-bit with the scale you mean before the run (with
  ``on_error="skip"`` it is skipped and counted like an unreadable file);
* a file PIL cannot identify, or one that is truncated, raises :class:`CorruptImageError`
  naming the file. Datamodules with ``on_error="skip"`` catch it, log it and report the sample
  as skipped (see :func:`datamodules.sample.skipped_sample`).
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["CorruptImageError", "load_image", "to_rgb"]

_MAX_16BIT = 65535.0


class CorruptImageError(ValueError):
    """An image file that cannot be decoded (unknown format, truncated, corrupt data)."""


def to_rgb(image: Image.Image, name: str = "<image>") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see the module docstring for the rules); ``name`` is for messages.

    Raises:
        CorruptImageError: a 32-bit integer image (mode ``I``) with a value outside ``[0, 65535]``.

    Examples:
        >>> gray16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
        >>> np.asarray(to_rgb(gray16))[0, :, 0].tolist()
        [0, 128, 255]
        >>> np.asarray(to_rgb(Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32))))[0, :, 0].tolist()
        [0, 128, 255]
        >>> to_rgb(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        datamodules.images.CorruptImageError: Cannot convert image '<image>': 32-bit integer (PIL mode 'I') values ...
        >>> to_rgb(Image.new("CMYK", (2, 2))).mode
        'RGB'
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        low, high = values.min(initial=0), values.max(initial=0)
        if mode == "I" and (low < 0 or high > _MAX_16BIT):
            raise CorruptImageError(
                f"Cannot convert image {name!r}: 32-bit integer (PIL mode 'I') values in [{low:.0f}, {high:.0f}]. "
                f"Only values in [0, {_MAX_16BIT:.0f}] (16-bit data) have a fixed scale to 8 bits; this image has "
                "none. Convert it with the scale you mean (e.g. save it as an 8-bit or 16-bit PNG), or pass "
                "on_error='skip' to skip such images (they are counted and listed in the results).")
        gray = np.clip(np.rint(values / _MAX_16BIT * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_image(path: Union[str, os.PathLike]) -> Image.Image:
    """Open, fully decode and convert ``path`` to RGB.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptImageError: PIL cannot identify or fully decode the file (the message names it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file {path!r} does not exist.")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later in a worker
            return to_rgb(image, path)
    except CorruptImageError:  # to_rgb's message names the file and says how to fix it
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"Cannot decode image {path!r}: {err}. Pass on_error='skip' to skip unreadable "
                                "images (they are counted and listed in the results).") from err
