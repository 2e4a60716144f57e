"""The offline default benchmark: SyntheticShapes x three shipped backbones x every explainer x every metric.

Everything here runs without network or downloads: the scenes are generated -- scenes with known evidence,
where one object decides the class among class-neutral distractors (:mod:`datamodules.evidence_scenes`) --
and the backbones are checkpoints shipped in the package
(``synthetic/<name>``): ``res_cnn`` (global average pooling + linear head, where Grad-CAM, HiResCAM and
XGrad-CAM coincide), ``vgg_cnn`` (VGG-16's flatten -> FC -> ReLU -> FC head, where they differ) and
``conv_vit`` (a vision transformer on a convolutional stem, explained at a token layer through the layout
adapter), all trained on these scenes. ``plain_cnn`` and ``mobile_cnn`` are trained on the classic scenes and run when
named with ``--data_args.scene classic`` (a checkpoint is refused on scenes it was not trained on). The settings in
:data:`OFFLINE_DEFAULTS` -- the defaults of :class:`benchmark.runner.settings.RunConfig` -- are chosen so
that the whole matrix finishes within 6 minutes on 2 CPU cores (``leaderboards/synthetic``); larger settings
are one flag away (``--data_args``, ``--metric_args``).
"""
from __future__ import annotations

from typing import Any, Dict

__all__ = ["OFFLINE_DEFAULTS"]

#: The default data, backbones and metric settings (recorded with every result).
OFFLINE_DEFAULTS: Dict[str, Any] = {
    # scenes with known evidence: one object decides the class among class-neutral distractors
    "data": {"size": 96, "split": "val", "image_size": 128, "seed": 0, "scene": "evidence"},
    "backbones": ["synthetic/res_cnn", "synthetic/vgg_cnn", "synthetic/conv_vit"],
    "metric_settings": {
        # RISE: 224 steps of 224 pixels at 224 x 224; here 16 steps of 1024 pixels cover 128 x 128
        "deletion": {"steps": 16}, "insertion": {"steps": 16},
        # wsolevaluation sweeps 100 thresholds; 20 (0.00:0.05:0.95) keep the run within budget
        "max_box_acc": {"thresholds": [round(0.05 * i, 2) for i in range(20)]},
        # 8 classes: top-1 localization; the recall variant over the top-2 classes
        "localization_error": {"top_k": [1]}, "pointing_game_recall": {"top_k": 2},
    },
    "top_k": 2,  # maps of the 2 best classes (the target's is reused, so one extra explainer call)
    "batch_size": 32,
}
