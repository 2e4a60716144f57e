"""Exceptions of the datamodules (both are ``ValueError`` subclasses, and both are what
``on_error="skip"`` skips)."""
from __future__ import annotations

from datamodules.images import CorruptImageError

__all__ = ["AnnotationError", "CorruptImageError"]


class AnnotationError(ValueError):
    """A malformed annotation (the message names the file and the line or field)."""
