"""The shipped SyntheticShapes backbones: cards, accuracy, and that the metrics discriminate on them.

The ground truth of SyntheticShapes is known by construction, so on the shipped (trained) models a
real explainer must beat the baselines that ignore the model, and Fake-CAM must show the pattern of
Poppi et al. (CVPRW 2021) Table 2.
"""
import hashlib

import pytest
import pytorch_lightning as pl
import torch

from benchmark.explainers import create_explainer
from benchmark.runtime.backbones import create_backbone, list_backbones
from benchmark.runtime.module import ExplainerModule
from benchmark.synthetic import CHECKPOINT_DIR, model_card, shipped_checkpoint
from benchmark.synthetic.train import train
from datamodules.synthetic import SyntheticShapes, SyntheticShapesDataModule

NAMES = list_backbones("synthetic")


def test_five_families_are_shipped():
    assert NAMES == ["conv_vit", "mobile_cnn", "plain_cnn", "res_cnn", "vgg_cnn"]


#: the accuracy a shipped checkpoint must reach on its scenes: the evidence scenes are a harder task (the class is
#: the one object whose outline and texture agree, among distractors of the same vocabulary, up to half occluded)
MIN_ACCURACY = {"classic": 0.95, "evidence": 0.92}
#: the vision transformer's floor on the evidence scenes: without the convolutions' locality it reaches 91 % where
#: the CNNs reach 93-94 % in the same training budget (16,000 x 12 epochs, 36 min on 2 cores; docs/datamodules.md)
TRANSFORMERS = {"conv_vit": 0.90}


def _min_accuracy(name):
    return TRANSFORMERS.get(name, MIN_ACCURACY[_scene(name)])


def _scene(name):
    """The scene family ``name`` was trained on (its card's ``config.scene``; cards before it: classic)."""
    return model_card(name)["config"].get("scene", "classic")


def _maps(name, methods):
    model, prep = create_backbone(f"synthetic/{name}")
    data = SyntheticShapes(size=4, split="val", preprocessing=prep, scene=_scene(name))
    images = torch.stack([data[i]["image"] for i in range(4)])
    labels = torch.tensor([data[i]["label"] for i in range(4)])
    return {m: create_explainer(m, model, input_size=prep.input_size).unnormalized_maps(images, labels)
            for m in methods}


def test_the_head_types_decide_which_methods_coincide():
    """Global average pooling + one linear layer: the class score's gradient w.r.t. the 8 x 8 map is w_c / 64 at
    every position and for every input, so Grad-CAM (mean gradient), HiResCAM (gradient x activation) and
    XGrad-CAM (activation-weighted gradient) give the same maps, and Smooth Grad-CAM++'s noisy gradients equal
    Grad-CAM++'s. VGG-16's flatten -> FC -> ReLU -> FC head makes the gradient vary over the map: they differ."""
    methods = ["gradcam", "hirescam", "xgradcam", "gradcampp", "smoothgradcampp"]
    gap, fc = _maps("res_cnn", methods), _maps("vgg_cnn", methods)

    def gap_between(maps, a, b):
        scale = maps[a].abs().amax()
        return float((maps[a] / scale - maps[b] / maps[b].abs().amax()).abs().amax())

    for a, b in [("gradcam", "hirescam"), ("gradcam", "xgradcam"), ("gradcampp", "smoothgradcampp")]:
        assert gap_between(gap, a, b) < 1e-5, (a, b)
        assert gap_between(fc, a, b) > 1e-2, (a, b)
    assert gap_between(fc, "hirescam", "xgradcam") > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_card_matches_the_checkpoint(name):
    card, path = model_card(name), shipped_checkpoint(name)
    assert path.stat().st_size <= 3 * 10**6
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"]
    assert card["val_accuracy"] >= _min_accuracy(name) and card["config"]["image_size"] == 128
    assert card["command"].startswith(f"cam-bench train-synthetic --model {name}")


@pytest.mark.parametrize("name", NAMES)
def test_shipped_checkpoint_reaches_the_documented_accuracy_on_512_val_images(name):
    model, prep = create_backbone(f"synthetic/{name}")
    assert not model.training and prep.crop_size == 128
    data = SyntheticShapes(size=512, split="val", preprocessing=prep, annotations=False, scene=_scene(name))
    correct = 0
    with torch.no_grad():
        for start in range(0, 512, 128):
            batch = [data[i] for i in range(start, start + 128)]
            logits = model(torch.stack([s["image"] for s in batch]))
            correct += int((logits.argmax(1) == torch.tensor([s["label"] for s in batch])).sum())
    accuracy = correct / 512
    assert accuracy >= _min_accuracy(name)
    assert accuracy >= model_card(name)["val_accuracy_512"] - 1 / 512  # one image of float-rounding slack


def test_backbone_weights_options():
    trained, _ = create_backbone("synthetic/res_cnn")
    random, _ = create_backbone("synthetic/res_cnn", weights="random")
    x = torch.zeros(1, 3, 128, 128)
    assert not torch.equal(trained(x), random(x))
    with pytest.raises(KeyError, match=r"valid: \['synthetic/conv_vit', 'synthetic/mobile_cnn'"):
        create_backbone("synthetic/resnet")
    with pytest.raises(ValueError, match="'random' or a file path"):
        create_backbone("synthetic/res_cnn", weights="IMAGENET1K_V1")


def _run(name, explainers, metrics, size=128):
    model, prep = create_backbone(f"synthetic/{name}")
    module = ExplainerModule(model, explainers, keep_maps=False, input_size=prep.input_size, metrics=metrics)
    dm = SyntheticShapesDataModule(size=size, preprocessing=prep, batch_size=64, scene=_scene(name))
    pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
               enable_checkpointing=False).predict(module, datamodule=dm, return_predictions=False)
    return {(r["method"], r["metric"]): r["value"] for r in module.results}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_gradcam_pointing_game_beats_the_center_and_random_baselines(name):
    """On the evidence scenes the class object is large (radius 14-35 % of the side) and so often covers the
    image centre: the centre baseline's pointing game is about 90 % there (about 75 % on the classic scenes), so the
    margin over it is asked of the energy pointing game, where the centre's Gaussian spends its energy off the
    object; the pointing game must still beat random by 10 points and not fall below the centre.

    On the vision transformer Grad-CAM's pointing game falls below the centre's (82 % against 91 % on these 128
    images): the method that keeps each token's own gradient, HiResCAM, is asked not to (93 % in the committed
    run), and Grad-CAM keeps the margins over random and, in energy, over the centre."""
    values = _run(name, ["gradcam", "hirescam", "center", "random"], ["pointing_game", "energy_pointing_game"])
    grad, hires, center, rand = (values[(m, "pointing_game_accuracy")]
                                 for m in ("gradcam", "hirescam", "center", "random"))
    assert (hires if name in TRANSFORMERS else grad) >= center and grad > rand + 10, (grad, hires, center, rand)
    energy = {m: values[(m, "energy_pointing_game")] for m in ("gradcam", "center", "random")}
    assert energy["gradcam"] > energy["center"] + 5 and energy["gradcam"] > energy["random"] + 10, energy


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_fakecam_shows_the_poppi_table2_pattern(name):
    metrics = ["average_drop", "average_increase", "coherency", "complexity", "adcc"]
    values = _run(name, ["fakecam", "gradcam"], metrics, size=64)
    fake = {m: values[("fakecam", m)] for m in metrics}
    # Poppi Table 2, Fake-CAM row: Avg Drop ~ 0, Coherency ~ 100, Complexity ~ 100, ADCC ~ 0
    assert fake["average_drop"] < 1 and fake["coherency"] > 99 and fake["complexity"] > 99 and fake["adcc"] < 2
    # ... and it "wins" Average Drop against a real method while ADCC exposes it
    assert fake["average_drop"] < values[("gradcam", "average_drop")]
    assert fake["adcc"] < values[("gradcam", "adcc")]


@pytest.mark.slow
def test_training_script_is_deterministic(tmp_path):
    options = dict(train_size=128, val_size=64, epochs=1, batch_size=32, num_workers=0)
    first = train("plain_cnn", tmp_path / "a", **options)
    second = train("plain_cnn", tmp_path / "b", **options)
    assert first["sha256"] == second["sha256"]
    assert (tmp_path / "a" / "plain_cnn.pt").is_file() and CHECKPOINT_DIR.is_dir()
