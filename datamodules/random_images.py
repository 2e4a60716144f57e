"""Random images: an offline smoke-test datamodule (no ground truth, not a benchmark).

Each sample is generated from ``(seed, index)`` alone -- Gaussian noise already in the model's
normalised input space and a uniform random label -- so the data are identical across runs,
processes and batch sizes. Samples follow the datamodule contract: a dict with ``image``
``(3, H, W)``, ``label``, ``index`` (global dataset index) and ``id``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch.utils.data import Dataset

from datamodules.base import CamDataModule

__all__ = ["RandomImages", "RandomImagesDataModule"]


class RandomImages(Dataset):
    """``size`` seeded noise images of ``image_size`` with labels in ``[0, num_classes)``.

    Examples:
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


class RandomImagesDataModule(CamDataModule):
    """Predict-only datamodule over :class:`RandomImages` (fixed shards in ``cam-bench run``, like every map-style
    datamodule: resumable, identical on 1 or N processes).

    Args:
        size, num_classes, seed: see :class:`RandomImages`.
        image_size: side of the images; default: the crop size of ``preprocessing`` (the backbone's input in a
            run; 224 without one). The noise is already in the normalised space: nothing else of
            ``preprocessing`` applies.
        preprocessing, batch_size, num_workers, on_error: see :class:`~datamodules.base.CamDataModule`
            (generated images are never unreadable: ``on_error`` has nothing to act on).

    Examples:
        >>> dm = RandomImagesDataModule(size=5, image_size=8, num_classes=3, batch_size=2)
        >>> dm.setup("predict")
        >>> [batch["index"].tolist() for batch in dm.predict_dataloader()]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, size: int = 16, image_size: Optional[int] = None, num_classes: int = 1000, seed: int = 0,
                 preprocessing: Any = None, batch_size: int = 8, num_workers: int = 0, on_error: str = "raise") -> None:
        super().__init__(preprocessing, batch_size, num_workers, on_error)
        self.save_hyperparameters(ignore=["preprocessing"])

    def build_dataset(self) -> RandomImages:
        hp = self.hparams
        side = hp.image_size if hp.image_size is not None else self.preprocessing.input_size[-1]
        return RandomImages(hp.size, side, hp.num_classes, hp.seed)
