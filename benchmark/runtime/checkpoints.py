"""Local checkpoint files: which weights strings name a file, and reading a state dict safely (tensors only).

Formats: ``.pth``/``.pt``/``.ckpt``/``.bin`` written by ``torch.save`` (read with ``weights_only=True``) or
``.safetensors``; a state dict, or a dict holding one under ``state_dict``/``model``; ``module.``/``model.``
prefixes are stripped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn

__all__ = ["is_checkpoint_path", "load_checkpoint", "read_checkpoint"]


_CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".safetensors"}


def is_checkpoint_path(weights: Optional[str]) -> bool:
    """A weights string naming a file (existing or not) rather than a pretrained tag."""
    return weights is not None and (os.sep in weights or Path(weights).suffix in _CHECKPOINT_SUFFIXES
                                    or Path(weights).is_file())


def read_checkpoint(path: Path) -> Dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, unwrapped ."""
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist; pass an existing file path.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torch/safetensors raise UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"Checkpoint {str(path)!r} cannot be read as a state dict of tensors "
                         f"({type(err).__name__}): it is truncated or corrupt, or holds pickled "
                         "Python objects besides tensors (refused: loading those runs code). Re-save it with "
                         "torch.save(model.state_dict(), path) or as .safetensors.") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_checkpoint(model: nn.Module, path: Union[str, os.PathLike]) -> nn.Module:
    """Load a local checkpoint into ``model`` (strict); formats in the module docstring.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read (corrupt, truncated, pickled objects), or the keys do not match
            the model (missing / unexpected keys are listed).
    """
    path = Path(path)
    state = read_checkpoint(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"Checkpoint {str(path)!r} does not match {type(model).__name__}: missing keys {missing[:8]}, "
            f"unexpected keys {unexpected[:8]}, shape mismatches {mismatched[:8]} "
            "(a different architecture, or pass `num_classes`?).")
    model.load_state_dict(state)
    return model
