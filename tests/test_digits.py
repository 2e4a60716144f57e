"""The digits backbone (the MNIST CNN of Nagy et al.) and its training script, on a mini MNIST in the IDX format."""
import json

import pytest
import torch
from torch import nn

from benchmark.cli import main as cli_main
from benchmark.digits.models import MnistCNN
from benchmark.digits.train import main, train
from benchmark.explainers import resolve_target_layer
from benchmark.metrics import list_metrics
from benchmark.runner.config import RunConfig, validate
from benchmark.runtime.backbones import create_backbone, list_backbones
from datamodules.mnist import MNISTDataModule
from tests.fixtures_digits import make_mnist


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    make_mnist(root, n=64, split="train")
    make_mnist(root, n=16, split="test", seed=1)
    return root


def test_architecture_is_the_classic_mnist_cnn():
    model = MnistCNN()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (3, 3)), (32, 64, (3, 3))]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(64 * 12 * 12, 128), (128, 10)]
    # closed form: conv 1*32*9 + 32, conv 32*64*9 + 64, fc 9216*128 + 128, fc 128*10 + 10
    assert sum(p.numel() for p in model.parameters()) == 320 + 18496 + 1179776 + 1290


def test_target_layer_is_the_last_conv_relu():
    model, prep = create_backbone("digits/mnist_cnn")
    assert resolve_target_layer(model, None, prep.input_size) == "features"
    assert isinstance(model.features[-1], nn.ReLU) and isinstance(model.features[-2], nn.Conv2d)
    assert model.features(torch.zeros(1, *prep.input_size)).shape == (1, 64, 24, 24)


def test_backbone_factory():
    model, prep = create_backbone("digits/mnist_cnn")
    assert isinstance(model, MnistCNN) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert (prep.input_size, prep.resize_size, prep.crop_size, prep.mean, prep.std) == (
        (1, 28, 28), 28, 28, (0.1307,), (0.3081,))
    assert list_backbones("digits") == ["mnist_cnn"]
    assert create_backbone("digits/mnist_cnn", num_classes=3).model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    assert isinstance(create_backbone("digits/mnist_cnn", weights="random").model, MnistCNN)
    with pytest.raises(KeyError, match=r"Unknown digits backbone 'digits/lenet'; valid: \['digits/mnist_cnn'\]"):
        create_backbone("digits/lenet")
    with pytest.raises(ValueError, match="no weights are shipped: train them with `python -m benchmark.digits.train"):
        create_backbone("digits/mnist_cnn", weights="default")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_backbone("digits/mnist_cnn", weights="missing.pt")


def test_training_is_seeded_and_loads_as_a_backbone(mnist, tmp_path):
    state = torch.random.get_rng_state()
    assert main(["--root", str(mnist), "--out", str(tmp_path / "a" / "mnist_cnn.pt"), "--epochs", "1",
                 "--seed", "0"]) == 0
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is left alone
    card_b = train(mnist, tmp_path / "b" / "mnist_cnn.pt", epochs=1, seed=0)
    card_c = train(mnist / "MNIST" / "raw", tmp_path / "c.pt", epochs=1, seed=1)
    paths = (tmp_path / "a" / "mnist_cnn.pt", tmp_path / "b" / "mnist_cnn.pt", tmp_path / "c.pt")
    a, b, c = (torch.load(p, weights_only=True) for p in paths)
    assert list(a) == list(MnistCNN().state_dict()) and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.conv1.weight"], c["features.conv1.weight"])
    assert not torch.equal(a["features.conv1.weight"], MnistCNN().state_dict()["features.conv1.weight"])
    card = json.loads((tmp_path / "a" / "mnist_cnn.json").read_text())
    assert card == {**card_b, "command": card["command"]} and card["sha256"] == card_b["sha256"] != card_c["sha256"]
    assert (card["config"]["epochs"], card["config"]["seed"]) == (1, 0)
    assert (card["train_images"], card["test_images"]) == (64, 16)
    assert card["versions"]["torch"] == torch.__version__ and card["parameters"] == 1199882
    assert 0 <= card["test_accuracy"] <= 1 and card["test_accuracy"] * 16 == round(card["test_accuracy"] * 16)
    model, _ = create_backbone("digits/mnist_cnn", weights=tmp_path / "a" / "mnist_cnn.pt")
    reference = MnistCNN().eval()
    reference.load_state_dict(a)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), reference(x))
    dm = MNISTDataModule(mnist, batch_size=16)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    accuracy = (model(batch["image"]).argmax(1) == batch["label"]).float().mean().item()
    assert accuracy == pytest.approx(card["test_accuracy"])  # the card's accuracy, through the datamodule


def test_training_without_test_files_and_limit(tmp_path):
    make_mnist(tmp_path, n=40, split="train")
    card = train(tmp_path, tmp_path / "out.pt", epochs=1, limit=20, batch_size=8)
    assert card["train_images"] == 20 and card["test_accuracy"] is None and card["test_images"] is None
    with pytest.raises(TypeError, match=r"Unknown training options \['epoch'\]"):
        train(tmp_path, tmp_path / "out.pt", epoch=1)
    with pytest.raises(FileNotFoundError, match="MNIST train files"):
        train(tmp_path / "nowhere", tmp_path / "out.pt")


def test_run_config_accepts_digits_backbones(mnist):
    metrics = list_metrics()[:1]
    dm = validate(RunConfig(data="mnist", data_args={"root": str(mnist)}, backbones=["digits/mnist_cnn"],
                            explainers=["gradcam"], metrics=metrics))
    assert isinstance(dm, MNISTDataModule)
    with pytest.raises(ValueError, match=r"Expected `backbone digits/<name>` to be one of \('mnist_cnn',\)"):
        validate(RunConfig(data="mnist", data_args={"root": str(mnist)}, backbones=["digits/lenet"],
                           explainers=["gradcam"], metrics=metrics))


def test_cam_bench_run_on_mnist_with_the_digits_cnn(mnist, tmp_path):
    out = tmp_path / "run"
    assert cli_main(["run", "--data", "mnist", "--data_args", f"{{root: {mnist}, limit: 6}}", "--backbones",
                     "[digits/mnist_cnn]", "--explainers", "[gradcam, center]", "--metrics",
                     "[average_drop, coherency, complexity, adcc, deletion]", "--batch_size", "3", "--bootstrap", "20",
                     "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--out", str(out)]) == 0
    board = (out / "leaderboard.md").read_text()
    assert "## mnist / digits/mnist_cnn" in board and "mean [0.1307], std [0.3081]" in board
    assert (out / "figures" / "digits--mnist_cnn_saliency.png").is_file()  # grey images drawn as grey RGB
