"""Train the MNIST CNN of :mod:`benchmark.digits.models` on a local MNIST copy.

``python -m benchmark.digits.train --root DATA --out checkpoints/mnist_cnn.pt --epochs 2 --seed 0``
reads ``read_mnist(DATA, "train")`` (torchvision's layout, see :mod:`datamodules.mnist`), trains with
PyTorch's MNIST-example recipe -- Adadelta (lr 1.0), the learning rate times 0.7 after each epoch,
batches of 64, cross-entropy on normalised images -- and writes the float32 state dict to ``--out``
and a JSON model card beside it (``mnist_cnn.json``: settings, seed, top-1 accuracy on the test split
when ``t10k-*`` is there, SHA-256, versions, command). Load the result with
``create_backbone("digits/mnist_cnn", weights="checkpoints/mnist_cnn.pt")``.

Training is seeded (initialisation, shuffling and dropout) and leaves the global random state as it
found it; a rerun on the same machine and thread count gives identical weights.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from benchmark.digits.models import build_digits_model
from datamodules.mnist import MNIST_MEAN, MNIST_STD, read_mnist

__all__ = ["DEFAULTS", "evaluate", "main", "normalise", "train"]

DEFAULTS: Dict[str, Any] = dict(epochs=2, batch_size=64, lr=1.0, gamma=0.7, seed=0, limit=None)


def normalise(images: Tensor) -> Tensor:
    """uint8 ``(N, 28, 28)`` -> float ``(N, 1, 28, 28)``: ``(x / 255 - 0.1307) / 0.3081``, as the datamodule.

    Examples:
        >>> normalise(torch.tensor([[[0, 255]]], dtype=torch.uint8)).flatten().tolist()
        [-0.4242129623889923, 2.821486711502075]
    """
    return ((images.float() / 255 - MNIST_MEAN[0]) / MNIST_STD[0]).unsqueeze(1)


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on uint8 ``images`` ``(N, 28, 28)``.

    Examples:
        >>> from benchmark.digits.models import MnistCNN
        >>> evaluate(MnistCNN(), torch.zeros(4, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2, 3])) in (0, 0.25)
        True
    """
    model.eval()
    correct = sum(int((model(normalise(images[i:i + batch_size])).argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def train(root: Union[str, Path], out: Union[str, Path], **overrides: Any) -> Dict[str, Any]:
    """Train ``mnist_cnn`` on ``read_mnist(root, "train")``, write ``out`` and its ``.json`` card, return the card.

    Args:
        root: the MNIST folder (``data/``, ``data/MNIST`` or ``data/MNIST/raw``).
        out: the checkpoint path (``.pt``); the card goes to ``out`` with the suffix ``.json``.
        overrides: any of :data:`DEFAULTS` (``epochs``, ``batch_size``, ``lr``, ``gamma``, ``seed``,
            ``limit``: the first ``limit`` training images only).
    """
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"Unknown training options {unknown}; valid: {sorted(DEFAULTS)}.")
    cfg = {**DEFAULTS, **overrides}
    images, labels = read_mnist(root, "train")
    if cfg["limit"] is not None:
        images, labels = images[:cfg["limit"]], labels[:cfg["limit"]]
    inputs = normalise(images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = build_digits_model("mnist_cnn")
        order = torch.Generator().manual_seed(cfg["seed"])
        optimizer = torch.optim.Adadelta(model.parameters(), lr=cfg["lr"])
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=cfg["gamma"])
        model.train()
        for _ in range(cfg["epochs"]):
            for batch in torch.randperm(len(inputs), generator=order).split(cfg["batch_size"]):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
                optimizer.step()
            schedule.step()
    model.eval()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    try:
        test_images, test_labels = read_mnist(root, "test")
        accuracy: Optional[float] = evaluate(model, test_images, test_labels)
    except FileNotFoundError:
        test_images, accuracy = None, None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    card = {"name": "mnist_cnn", "architecture": "benchmark.digits.models.MnistCNN",
            "parameters": sum(p.numel() for p in model.parameters()), "config": cfg, "train_images": len(images),
            "test_accuracy": accuracy, "test_images": None if test_images is None else len(test_images),
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
            "threads": torch.get_num_threads(),
            "command": f"python -m benchmark.digits.train --root {root} --out {out}" + "".join(
                f" --{k.replace('_', '-')} {v}" for k, v in cfg.items() if v is not None)}
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark.digits.train", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="MNIST folder: data/, data/MNIST or data/MNIST/raw")
    parser.add_argument("--out", default="checkpoints/mnist_cnn.pt", help="checkpoint path (card: same name, .json)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int if value is None else type(value), default=value)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m benchmark.digits.train --root DATA --out checkpoints/mnist_cnn.pt --epochs 2 --seed 0``."""
    args = _parser().parse_args(argv)
    card = train(args.root, args.out, **{k: getattr(args, k) for k in DEFAULTS})
    print(json.dumps({k: card[k] for k in ("name", "train_images", "test_accuracy", "sha256")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
