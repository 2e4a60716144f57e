"""The SyntheticShapes backbones: architectures, training, and the checkpoints shipped in the package.

``create_backbone("synthetic/<name>")`` loads ``checkpoints/<name>.pt``; ``checkpoints/<name>.json``
is its model card (training config, measured validation accuracy, SHA-256, reproduce command).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

__all__ = ["CHECKPOINT_DIR", "model_card", "shipped_checkpoint"]

#: Where the shipped checkpoints and their cards live (inside the installed package).
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


def shipped_checkpoint(name: str) -> Path:
    """Path of the shipped checkpoint of ``name``.

    Raises:
        FileNotFoundError: not shipped; says how to train it.
    """
    path = CHECKPOINT_DIR / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"No shipped checkpoint {path}; train it with `cam-bench train-synthetic --model "
                                f"{name}` (writes it there) or pass `weights='/path/to/{name}.pt'`.")
    return path


def model_card(name: str) -> Dict[str, Any]:
    """The JSON card of shipped model ``name`` (config, ``val_accuracy``, ``sha256``, command)."""
    shipped_checkpoint(name)
    return json.loads((CHECKPOINT_DIR / f"{name}.json").read_text())
