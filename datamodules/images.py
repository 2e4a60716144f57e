"""Reading images from disk: any PIL-readable file to an 8-bit RGB ``PIL.Image``.

Policy (documented in the manual, docs/datamodules.md "Bad input"):

* CMYK, grayscale (``L``/``1``), palette (``P``), ``LA``/``RGBA`` -> RGB with PIL's conversion; the alpha
  channel is dropped, the colour channels are kept as stored (the torchvision/timm ImageNet
  loaders do the same);
* 16-bit and 32-bit integer images (``I;16*``, ``I``) -> scaled to 8 bits by the range of their
  type (``/ 257`` for 16-bit data) instead of PIL's clipping at 255; float images (``F``) are
  taken as ``[0, 1]`` intensities;
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


class CorruptImageError(ValueError):
    """An image file that cannot be decoded (unknown format, truncated, corrupt data)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see the module docstring for the rules).

    Examples:
        >>> gray16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
        >>> np.asarray(to_rgb(gray16))[0, :, 0].tolist()
        [0, 128, 255]
        >>> to_rgb(Image.new("CMYK", (2, 2))).mode
        'RGB'
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) <= 65535 else float(values.max())
        gray = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
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
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"Cannot decode image {path!r}: {err}. Pass on_error='skip' to skip unreadable "
                                "images (they are counted and listed in the results).") from err
