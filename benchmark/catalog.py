"""What ``cam-bench list`` and ``cam-bench run --help`` print, as plain data: no model library imported.

The registries live beside their classes (:mod:`benchmark.explainers`, :mod:`benchmark.metrics`,
:mod:`datamodules`, :mod:`benchmark.runtime.backbones`) and importing them loads torch, torchmetrics,
timm and Lightning -- about 7 s and 1 GB before a listing could print. This module holds their names
and one-line descriptions; ``tests/test_catalog.py`` checks every entry against the live registries
(and prints the entry to paste when one drifts), so the listing cannot disagree with what a run
accepts. It imports nothing of the project and no third-party package.

Examples:
    >>> "gradcam" in DEFAULT_EXPLAINERS, EXPLAINERS["gradcam"].split(":")[0]
    (True, 'Grad-CAM')
"""
from __future__ import annotations

from typing import Dict, Tuple

__all__ = ["DATAMODULES", "DEFAULT_EXPLAINERS", "DEFAULT_METRICS", "DIGITS_BACKBONES", "ENTRY_POINT_GROUP",
           "EXPLAINERS", "METRICS", "NOT_FOR_PREDICT", "SYNTHETIC_BACKBONES", "TARGET_LAYERS", "TRAINER_FLAGS"]

#: The entry-point group installed packages publish explainers under (``[options.entry_points]``).
ENTRY_POINT_GROUP = "cam_bench.explainers"

#: registered explainer -> the first line of its docstring
EXPLAINERS: Dict[str, str] = {
    "ablationcam": "Ablation-CAM: channel weights = relative drop of the class logit when the channel is zeroed.",
    "attentionrollout": ("Attention rollout: the class token's row of the product of the residual-corrected "
                         "attention maps."),
    "center": "Centre: a centred Gaussian, sigma a fraction of the shorter side (sanity baseline).",
    "chefer2021": "Chefer et al. 2021: relevance propagated through the gradient-weighted attention of every block.",
    "eigencam": "Eigen-CAM: activations projected on their first principal component (class-agnostic).",
    "eigengradcam": "EigenGrad-CAM: gradient x activation projected on its first principal component.",
    "fakecam": "Fake-CAM: 1/N everywhere but 0 at the top-left pixel (sanity baseline).",
    "finercam": "Finer-CAM: Grad-CAM weights of the target score minus its most similar classes' scores.",
    "fullgrad": "FullGrad: input-gradient x input plus every layer's bias-gradients, rescaled and summed.",
    "gradcam": "Grad-CAM: channel weights = spatial mean of the class-score gradients.",
    "gradcampp": "Grad-CAM++: pixel-weighted positive gradients, paper Eq. 19 exactly.",
    "gradientshap": ("Gradient SHAP: expected gradients over random baselines and path points (captum, seeded "
                     "per sample)."),
    "guidedbackprop": ("Guided Backpropagation: input gradients through ReLUs that pass positive signals only "
                       "(captum)."),
    "guidedgradcam": "Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM.",
    "guidedgradcampp": "Guided Grad-CAM++: guided backpropagation times the upsampled Grad-CAM++ (Eq. 19).",
    "hirescam": "HiResCAM: each activation weighted by its own gradient (no spatial averaging).",
    "integratedgradients": ("Integrated Gradients from a constant baseline (captum), path integral in "
                            "``steps`` points."),
    "iscam": "IS-CAM: channel weights = softmax over channels of the target logit integrated along the masked path.",
    "kpcacam": "KPCA-CAM: activations projected on their first kernel principal component (class-agnostic).",
    "layercam": "Layer-CAM: each activation weighted by its own positive gradient.",
    "occlusion": "Occlusion: score drop when a patch around each pixel is filled (captum, batched patches).",
    "random": "Random: seeded uniform noise on the target layer's grid (sanity baseline).",
    "rise": "RISE: the class score of randomly masked inputs, averaged over the masks that keep each pixel.",
    "scorecam": "Score-CAM: channel weights = class score of the input masked by the channel.",
    "shapleycam": ("Shapley-CAM: channel weights = spatial mean of the gradient minus half the Hessian-activation "
                   "product."),
    "smoothgradcampp": "Smooth Grad-CAM++: Grad-CAM++ with gradients averaged over noisy inputs (seeded).",
    "sscam": "SS-CAM: channel weights = softmax over channels of the target logit averaged over noisy masks.",
    "xgradcam": "XGrad-CAM: gradients weighted by the normalised activations (axiom-based Grad-CAM).",
}

#: the explainers a run uses when none are named (``in_default_run``)
DEFAULT_EXPLAINERS: Tuple[str, ...] = ("ablationcam", "center", "eigencam", "fakecam", "finercam", "gradcam",
                                       "gradcampp", "hirescam", "layercam", "random", "scorecam", "shapleycam",
                                       "smoothgradcampp", "xgradcam")

#: registered metric -> the first line of its docstring
METRICS: Dict[str, str] = {
    "average_drop": "Average Drop % over the dataset; samples with ``Y = 0`` are undefined (counted, omitted).",
    "average_increase": "Average Increase in confidence %: share of images with ``O > Y``.",
    "coherency": "Coherency %; a finite constant map scores 0 by default (``nan_policy=\"zero\"``, the authors' code).",
    "complexity": "Complexity %: mean of the ``[0, 1]`` maps.",
    "adcc": "ADCC % (Poppi Eq. 5): the harmonic mean of the dataset means of Coherency, 1 - Complexity, 1 - Drop.",
    "deletion": "Deletion AUC (RISE, Petsiuk et al. 2018): most salient pixels replaced by 0 first; lower is better.",
    "insertion": "Insertion AUC (RISE, Petsiuk et al. 2018): pixels restored onto a blurred copy; higher is better.",
    "localization_error": ("Top-k localization error in % (Selvaraju et al., Grad-CAM, ICCV 2017, Table 1; "
                           "ILSVRC CLS-LOC)."),
    "max_box_acc": ("MaxBoxAcc in % (Choe et al., CVPR 2020; wsolevaluation V1), with the maps of the ground-"
                    "truth class."),
    "pointing_game": ("Pointing game accuracy in % (Zhang et al., \"Top-down Neural Attention by Excitation "
                      "Backprop\")."),
    "pointing_game_recall": "Top-k pointing \"recall\" in % of a Grad-CAM reproduction study (seed 000).",
    "energy_pointing_game": ("Energy-based pointing game in % (Wang et al., Score-CAM, CVPRW 2020): map energy"
                             " inside the boxes."),
    "box_ratio": ("Box ratio %: share of the pixels above ``threshold`` inside the target class's boxes, "
                  "averaged over samples."),
    "fidelity": "Fidelity (Pope et al. 2019): drop in accuracy (points) when the top ``p`` % of each map is removed.",
    "contrastivity": ("Contrastivity (Pope et al. 2019) %: how much the binarised map of the target differs "
                      "from other classes'."),
    "occlusion_correlation": ("Spearman correlation between the map and the signed occlusion map, both pooled "
                              "to ``size x size``."),
    "fgsm_robustness": "Pearson ``r`` between the map of the explained class on ``x`` and on its FGSM input ``x'``.",
    "one_pixel_sensitivity": ("Map value at the pixel of a successful one-pixel attack, before and after it "
                              "(Nagy et al., Table 6)."),
    "max_box_acc_v2": ("MaxBoxAccV2 in % (Choe et al., CVPR 2020): any component's box, mean over IoU 30/50/70 % "
                       "of the best threshold."),
    "pxap": ("PxAP in % (Choe et al., CVPR 2020): average precision of the map's pixels against the mask, over "
             "the dataset."),
    "road_morf": ("ROAD MoRF (Rong et al., ICML 2022): mean probability, most relevant pixels imputed first; lower "
                  "is better."),
    "road_lerf": ("ROAD LeRF (Rong et al., ICML 2022): mean probability, least relevant pixels imputed first; higher "
                  "is better."),
    "infidelity_square": ("Infidelity under square removal (Yeh et al., NeurIPS 2019), optimally scaled; lower is "
                          "better."),
    "infidelity_gaussian": ("Infidelity under Gaussian noise (Yeh et al., NeurIPS 2019), optimally scaled; lower is "
                            "better."),
    "max_sensitivity": ("Max-sensitivity (Yeh et al., NeurIPS 2019), relative to the map's norm as captum; lower is "
                        "better."),
    "mprt": ("Model-parameter randomization test (Adebayo et al., NeurIPS 2018): mean Spearman over layers; lower is "
             "better."),
}

#: the metrics a run computes when none are named, in leaderboard order
DEFAULT_METRICS: Tuple[str, ...] = ("average_drop", "average_increase", "coherency", "complexity", "adcc", "deletion",
                                    "insertion", "localization_error", "max_box_acc", "pointing_game",
                                    "pointing_game_recall", "energy_pointing_game")

#: registered datamodule -> its description
DATAMODULES: Dict[str, str] = {
    "chestxray14": "NIH ChestX-ray14: one item per (image, boxed finding), 14-way CheXNet class order",
    "cifar10": "CIFAR-10 from the pickled python-version batches (32 x 32; no boxes)",
    "hf": "Hugging Face `datasets` streaming (hub or local Parquet/imagefolder), split across ranks",
    "imagenet": "ILSVRC2012 validation with boxes (Kaggle LOC csv or per-image XML)",
    "mnist": "MNIST digits from torchvision's local IDX files (1 x 28 x 28; no boxes)",
    "random": "seeded noise images and labels (smoke tests; no ground truth)",
    "synthetic": "SyntheticShapes: procedural scenes with exact boxes and masks, offline (the default)",
    "voc2007": ("PASCAL VOC2007: one item per (image, class present), for the pointing game; object masks with "
                "segmentation=true"),
}

#: the shipped backbones: ``synthetic/<name>`` (checkpoints in the package) and ``digits/<name>`` (MNIST)
SYNTHETIC_BACKBONES: Tuple[str, ...] = ("conv_vit", "mobile_cnn", "plain_cnn", "res_cnn", "vgg_cnn")
DIGITS_BACKBONES: Tuple[str, ...] = ("mnist_cnn",)

#: model class -> its default target layer (the papers' choice for CNNs)
TARGET_LAYERS: Dict[str, str] = {
    "VGG": "last conv ReLU of `features` (14x14 at 224)",
    "AlexNet": "last conv ReLU of `features` (13x13 at 224)",
    "ResNet": "`layer4` (7x7 at 224); ResNeXt and Wide-ResNet too",
    "DenseNet": "`features.norm5` (7x7 at 224)",
    "GoogLeNet": "`inception5b` (7x7 at 224)",
    "VisionTransformer": ("timm `blocks.<last>.norm1`, torchvision `encoder.layers.<last>.ln_1`: the last "
                          "block's first norm (tokens: prefix + patch grid); the blocks after it never reach "
                          "the class token"),
    "VisionTransformerDistilled": ("`blocks.<last>.norm1` (DeiT: class + distillation tokens): the last "
                                   "block's first norm (tokens: prefix + patch grid); the blocks after it "
                                   "never reach the class token"),
    "Eva": ("`blocks.<last>.norm1`: the last block's first norm (tokens: prefix + patch grid); the blocks "
            "after it never reach the class token"),
    "Beit": ("`blocks.<last>.norm1`: the last block's first norm (tokens: prefix + patch grid); the blocks "
             "after it never reach the class token"),
    "Cait": "`blocks_token_only.<last>.norm1`: class token + patches entering the last class-attention block",
    "Xcit": "`cls_attn_blocks.<last>.norm1`: class token + patches entering the last class-attention block",
}

#: Lightning ``Trainer`` arguments that act on ``predict`` -> one line for ``cam-bench run --help`` (each passes
#: as ``--trainer.<name>`` and is parsed with Lightning's own types)
TRAINER_FLAGS: Dict[str, str] = {
    "accelerator": '"cpu", "gpu", "mps", "tpu", ... or "auto" (default: auto)',
    "strategy": '"ddp", "ddp_spawn", "fsdp", ... or "auto" (default: auto)',
    "devices": "number of devices, a list of ids, -1 for all, or \"auto\" (default: auto)",
    "num_nodes": "number of nodes (default: 1)",
    "precision": '"32-true", "16-mixed", "bf16-mixed", "64-true", ... (default: 32-true)',
    "logger": "a logger, a list of loggers, or false (default: a CSV logger under <out>/logs)",
    "fast_dev_run": "run only n batches (true: 1) to check the setup",
    "limit_predict_batches": "a fraction or a number of predict batches per process",
    "enable_progress_bar": "show the progress bar (default: true)",
    "deterministic": 'deterministic algorithms: true, false, or "warn" (default: null)',
    "benchmark": "torch.backends.cudnn.benchmark (default: null)",
    "inference_mode": "predict under torch.inference_mode (default: true)",
    "profiler": '"simple", "advanced", "pytorch" or a Profiler (default: null)',
    "detect_anomaly": "autograd anomaly detection (default: false)",
    "barebones": "no logging, progress bar or model summary (default: false)",
    "plugins": "Lightning plugins (precision, cluster environment, checkpoint IO)",
    "sync_batchnorm": "synchronise batch norm across processes (default: false)",
    "enable_autolog_hparams": "log the hyperparameters to the logger (default: true)",
    "model_registry": "name of a model in the Lightning model registry (default: null)",
}

#: ``Trainer`` arguments the run sets itself, and those that act only on fit/validate/test (epochs, steps,
#: gradient clipping, validation schedules): not accepted by ``cam-bench run``
NOT_FOR_PREDICT: Tuple[str, ...] = (
    "callbacks", "use_distributed_sampler", "default_root_dir", "enable_checkpointing", "enable_model_summary",
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches", "limit_val_batches",
    "limit_test_batches", "overfit_batches", "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps",
    "log_every_n_steps", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
    "reload_dataloaders_every_n_epochs")
