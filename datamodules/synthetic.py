"""SyntheticShapes: the offline default benchmark, with ground truth known by construction.

Scenes come from :func:`datamodules.shapes.render_scene` -- a pure function of ``(seed, split,
index)`` -- so nothing is downloaded or stored and every process sees the same images. Each
sample carries the exact instance ``boxes`` and ``masks`` of the image's class (``box_labels``
all equal to ``label``). The shipped backbones (``create_backbone("synthetic/<name>")``) were
trained on the ``train`` split; benchmarks run on ``val``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import torch
from PIL import Image

from benchmark.runtime.preprocessing import Preprocessing, synthetic_preprocessing
from datamodules.base import CamDataModule, CamDataset, check_choice, check_positive_int
from datamodules.evidence_scenes import render_evidence_scene
from datamodules.sample import make_sample
from datamodules.shapes import CLASSES, SPLITS, render_scene

#: Scene generators by name (``SyntheticShapes(scene=...)``).
SCENES = {"classic": render_scene, "evidence": render_evidence_scene}

__all__ = ["SCENES", "SyntheticShapes", "SyntheticShapesDataModule", "synthetic_preprocessing"]


class SyntheticShapes(CamDataset):
    """``size`` procedural scenes of ``split`` (see :mod:`datamodules.shapes`).

    Args:
        size: number of images.
        split: ``"train"``, ``"val"`` or ``"test"`` (independent random streams).
        image_size: side of the generated square images.
        seed: dataset seed.
        num_classes: classes used (2 to 8).
        multi_instance: only scenes with 2–3 instances of the class (Grad-CAM++'s multi-instance study).
        scene: ``"classic"`` (1–3 instances of the class among unpatterned clutter: :mod:`datamodules.shapes`;
            the shipped checkpoints' data) or ``"evidence"`` (exactly one object decides the class among
            class-neutral distractors of the same outlines and textures, with varied size and occlusion:
            :mod:`datamodules.evidence_scenes`).
        preprocessing: the backbone's preprocessing (default :func:`synthetic_preprocessing`).
        annotations: include ``boxes``/``box_labels``/``masks`` (training does without).
        on_error: the policy for samples that fail to load (see :class:`~datamodules.base.CamDataset`).

    Examples:
        >>> data = SyntheticShapes(size=4, split="val", image_size=64)
        >>> s = data[1]
        >>> s["image"].shape, s["index"], s["id"], s["masks"].shape[1:], bool((s["box_labels"] == s["label"]).all())
        (torch.Size([3, 64, 64]), 1, 'val_00000001', torch.Size([64, 64]), True)
    """

    def __init__(self, size: int = 256, split: str = "val", image_size: int = 128, seed: int = 0,
                 num_classes: int = len(CLASSES), multi_instance: bool = False,
                 preprocessing: Optional[Preprocessing] = None, annotations: bool = True,
                 on_error: str = "raise", scene: str = "classic") -> None:
        super().__init__(preprocessing or synthetic_preprocessing(check_positive_int(image_size, "image_size")),
                         on_error)
        self.size = check_positive_int(size, "size")
        self.split = check_choice(split, "split", SPLITS)
        self.image_size, self.seed = image_size, int(seed)
        if not isinstance(num_classes, int) or not 2 <= num_classes <= len(CLASSES):
            raise ValueError(f"Expected `num_classes` to be an int in [2, {len(CLASSES)}], but got {num_classes!r}.")
        self.num_classes, self.multi_instance, self.annotations = num_classes, bool(multi_instance), bool(annotations)
        self.scene = check_choice(scene, "scene", tuple(SCENES))

    def __len__(self) -> int:
        return self.size

    def sample_id(self, i: int) -> str:
        kind = "" if self.scene == "classic" else f"_{self.scene}"
        return f"{self.split}{kind}{'_multi' if self.multi_instance else ''}_{i:08d}"

    def load(self, i: int) -> Dict[str, Any]:
        scene = SCENES[self.scene](self.seed, self.split, i, self.image_size, self.num_classes, self.multi_instance)
        image = Image.fromarray(scene.image)
        if not self.annotations:
            return {"image": self.transform(image), "label": scene.label, "index": i, "id": self.sample_id(i)}
        return make_sample(image, self.preprocessing, self.transform, label=scene.label, index=i,
                           sample_id=self.sample_id(i), boxes=torch.from_numpy(scene.boxes),
                           box_labels=[scene.label] * len(scene.boxes), masks=torch.from_numpy(scene.masks))


class SyntheticShapesDataModule(CamDataModule):
    """Predict datamodule over :class:`SyntheticShapes` (the default of ``cam-bench run``).

    Args:
        size, split, image_size, seed, num_classes, multi_instance, scene: see :class:`SyntheticShapes`.
        preprocessing: default :func:`synthetic_preprocessing` of ``image_size`` (the shipped
            models'); give a backbone's preprocessing to benchmark other models on these scenes.
        batch_size, num_workers, on_error: see :class:`~datamodules.base.CamDataModule`.

    Examples:
        >>> dm = SyntheticShapesDataModule(size=3, image_size=32, batch_size=2)
        >>> dm.setup("predict")
        >>> [(b["index"].tolist(), len(b["boxes"])) for b in dm.predict_dataloader()]
        [([0, 1], 2), ([2], 1)]
    """

    PROVIDES = frozenset({"boxes", "masks"})

    def __init__(self, size: int = 256, split: str = "val", image_size: int = 128, seed: int = 0,
                 num_classes: int = len(CLASSES), multi_instance: bool = False,
                 preprocessing: Union[Preprocessing, Mapping[str, Any], str, None] = None,
                 batch_size: int = 32, num_workers: int = 0, on_error: str = "raise", scene: str = "classic") -> None:
        super().__init__(preprocessing or synthetic_preprocessing(check_positive_int(image_size, "image_size")),
                         batch_size, num_workers, on_error)
        self.save_hyperparameters()
        self.options = dict(size=size, split=split, image_size=image_size, seed=seed, num_classes=num_classes,
                            multi_instance=multi_instance, scene=scene)
        SyntheticShapes(**self.options)  # validate the arguments now

    def build_dataset(self) -> SyntheticShapes:
        return SyntheticShapes(**self.options, preprocessing=self.preprocessing, on_error=self.on_error)
