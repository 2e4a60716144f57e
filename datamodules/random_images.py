"""Random images: an offline smoke-test datamodule (no ground truth, not a benchmark).

Each sample is generated from ``(seed, index)`` alone -- Gaussian noise already in the model's
normalised input space and a uniform random label -- so the data are identical across runs,
processes and batch sizes. Samples follow the datamodule contract: a dict with ``image``
``(3, H, W)``, ``label``, ``index`` (global dataset index) and ``id``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["RandomImages", "RandomImagesDataModule"]


class RandomImages(Dataset):
    """``size`` seeded noise images of ``image_size`` with labels in ``[0, num_classes)``.

    Example:
        >>> data = RandomImages(size=4, image_size=8, num_classes=3, seed=1)
        >>> sample = data[2]
        >>> sample["image"].shape, sample["index"], sample["id"]
        (torch.Size([3, 8, 8]), 2, 'random_00000002')
        >>> torch.equal(sample["image"], RandomImages(4, 8, 3, seed=1)[2]["image"])
        True
    """

    def __init__(self, size: int = 16, image_size: int = 224, num_classes: int = 1000, seed: int = 0) -> None:
        for name, value in (("size", size), ("image_size", image_size), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive int, but got {value!r}.")
        self.size, self.image_size, self.num_classes, self.seed = size, image_size, num_classes, int(seed)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(f"Index {index} out of range for {self.size} samples.")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = torch.randn(3, self.image_size, self.image_size, generator=generator)
        label = int(torch.randint(self.num_classes, (1,), generator=generator))
        return {"image": image, "label": label, "index": index, "id": f"random_{index:08d}"}


class RandomImagesDataModule(pl.LightningDataModule):
    """Predict-only datamodule over :class:`RandomImages`.

    Example:
        >>> dm = RandomImagesDataModule(size=5, image_size=8, num_classes=3, batch_size=2)
        >>> dm.setup("predict")
        >>> [batch["index"].tolist() for batch in dm.predict_dataloader()]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, size: int = 16, image_size: int = 224, num_classes: int = 1000, seed: int = 0,
                 batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset: Optional[RandomImages] = None

    def setup(self, stage: Optional[str] = None) -> None:
        hp = self.hparams
        self.dataset = RandomImages(hp.size, hp.image_size, hp.num_classes, hp.seed)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers)
