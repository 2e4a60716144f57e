"""Train the shipped SyntheticShapes backbones with a real Lightning ``fit``.

``cam-bench train-synthetic --model res_cnn`` (or ``python -m benchmark.synthetic.train``)
trains one architecture of :mod:`benchmark.synthetic.models` on the ``train`` split of
:class:`datamodules.SyntheticShapes`, measures top-1 accuracy on the first ``--val-size``
images of the ``val`` split, and writes ``<out>/<model>.pt`` (float32 state dict) and
``<out>/<model>.json`` (the training config, the measured accuracy, the checkpoint's SHA-256,
the package versions and the command). Defaults are the settings of the shipped checkpoints;
training is seeded and ``deterministic=True``, so a rerun on the same machine and thread count
gives the same weights (other CPUs agree to float rounding and reach the same accuracy).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import Tensor
from torch.utils.data import DataLoader

from benchmark.synthetic.models import SYNTHETIC_MODELS, build_synthetic_model
from datamodules.synthetic import SyntheticShapes

__all__ = ["SyntheticClassifier", "evaluate", "main", "train"]

DEFAULTS: Dict[str, Any] = dict(image_size=128, num_classes=8, train_size=8_000, val_size=1_024, epochs=3,
                                batch_size=64, lr=3e-3, weight_decay=5e-4, seed=0, num_workers=1, scene="classic")


class SyntheticClassifier(pl.LightningModule):
    """Cross-entropy training of a classifier with AdamW and a one-cycle learning rate."""

    def __init__(self, model: torch.nn.Module, lr: float, weight_decay: float, num_classes: int) -> None:
        super().__init__()
        self.model, self.lr, self.weight_decay = model, lr, weight_decay
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> Tensor:
        images = batch["image"].contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(self.model(images), batch["label"])
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        images = batch["image"].contiguous(memory_format=torch.channels_last)
        self.val_acc(self.model(images), batch["label"])
        self.log("val_acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr,
                                                       total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _loader(split: str, size: int, cfg: Dict[str, Any], shuffle: bool) -> DataLoader:
    data = SyntheticShapes(size=size, split=split, image_size=cfg["image_size"], seed=cfg["seed"],
                           num_classes=cfg["num_classes"], annotations=False, scene=cfg["scene"])
    return DataLoader(data, batch_size=cfg["batch_size"], shuffle=shuffle, num_workers=cfg["num_workers"],
                      persistent_workers=cfg["num_workers"] > 0)


@torch.no_grad()
def evaluate(model: torch.nn.Module, val_size: int = 512, image_size: int = 128, num_classes: int = 8,
             seed: int = 0, batch_size: int = 128, scene: str = "classic") -> float:
    """Top-1 accuracy of ``model`` on the first ``val_size`` images of the ``val`` split."""
    model.eval()
    data = SyntheticShapes(size=val_size, split="val", image_size=image_size, seed=seed, num_classes=num_classes,
                           annotations=False, scene=scene)
    correct = 0
    for batch in DataLoader(data, batch_size=batch_size):
        correct += int((model(batch["image"]).argmax(1) == batch["label"]).sum())
    return correct / val_size


def train(name: str, out: Path, **overrides: Any) -> Dict[str, Any]:
    """Train architecture ``name``, write ``<out>/<name>.pt`` and ``.json``, return the card."""
    cfg = {**DEFAULTS, **overrides}
    pl.seed_everything(cfg["seed"], workers=True)
    model = build_synthetic_model(name, cfg["num_classes"]).to(memory_format=torch.channels_last)
    module = SyntheticClassifier(model, cfg["lr"], cfg["weight_decay"], cfg["num_classes"])
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=cfg["epochs"], deterministic=True, logger=False,
                         enable_checkpointing=False, default_root_dir=str(out), enable_model_summary=False)
    trainer.fit(module, _loader("train", cfg["train_size"], cfg, shuffle=True),
                _loader("val", cfg["val_size"], cfg, shuffle=False))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    model = build_synthetic_model(name, cfg["num_classes"])
    model.load_state_dict(state)
    accuracy = evaluate(model, cfg["val_size"], cfg["image_size"], cfg["num_classes"], cfg["seed"], scene=cfg["scene"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.pt"
    torch.save(state, path)
    card = {"name": name, "architecture": f"benchmark.synthetic.models.{name}",
            "parameters": sum(v.numel() for v in model.parameters()), "val_accuracy": accuracy,
            "val_images": cfg["val_size"],
            "val_accuracy_512": evaluate(model, 512, cfg["image_size"], cfg["num_classes"], cfg["seed"],
                                         scene=cfg["scene"]),
            "config": cfg, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "versions": {"torch": torch.__version__, "pytorch_lightning": pl.__version__,
                         "python": platform.python_version()},
            "threads": torch.get_num_threads(),
            "command": "cam-bench train-synthetic --model " + name + "".join(
                f" --{k.replace('_', '-')} {v}" for k, v in overrides.items() if v != DEFAULTS.get(k))}
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``train-synthetic`` options (defaults: the shipped checkpoints' settings)."""
    parser.add_argument("--model", required=True, choices=sorted(SYNTHETIC_MODELS), help="architecture")
    parser.add_argument("--out", default=str(Path(__file__).parent / "checkpoints"),
                        help="output directory (default: the package's shipped checkpoints)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    return parser


def run(args: argparse.Namespace) -> int:
    options = {k: getattr(args, k) for k in DEFAULTS}
    card = train(args.model, Path(args.out), **options)
    print(json.dumps({k: card[k] for k in ("name", "parameters", "val_accuracy", "sha256")}, indent=2))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m benchmark.synthetic.train --model res_cnn``."""
    return run(add_arguments(argparse.ArgumentParser(prog="train-synthetic")).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
