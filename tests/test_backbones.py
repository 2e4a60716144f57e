"""create_backbone: naming, preprocessing, freezing, and offline weight loading."""
from pathlib import Path

import pytest
import torch
import torchvision

from benchmark.runtime.backbones import Preprocessing, create_backbone, load_checkpoint


@pytest.mark.parametrize("name, family", [("resnet18", "ResNet"), ("torchvision/vgg11", "VGG"),
                                          ("timm/resnet18", "ResNet"), ("mobilenetv3_small_050", "MobileNetV3")])
def test_names_build_frozen_eval_models(name, family):
    model, prep = create_backbone(name)
    assert type(model).__name__ == family
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert isinstance(prep, Preprocessing)


def test_torchvision_preprocessing_from_weights_transforms():
    # torchvision's EfficientNet_B3_Weights.DEFAULT: resize 320, crop 300, bicubic
    prep = create_backbone("efficientnet_b3", num_classes=10).preprocessing
    assert (prep.resize_size, prep.crop_size, prep.input_size) == (320, 300, (3, 300, 300))
    assert prep.mean == pytest.approx((0.485, 0.456, 0.406)) and prep.interpolation == "bicubic"


def test_timm_preprocessing_from_pretrained_cfg():
    # timm resnet18.a1_in1k: bicubic, crop_pct 0.95 -> resize floor(224 / 0.95) = 235
    prep = create_backbone("timm/resnet18").preprocessing
    assert (prep.resize_size, prep.crop_size, prep.interpolation) == (235, 224, "bicubic")


def test_unknown_names_list_close_matches():
    with pytest.raises(KeyError, match="resnet18"):
        create_backbone("resnet181")
    with pytest.raises(KeyError, match="'keras'"):
        create_backbone("keras/resnet18")
    with pytest.raises(TypeError):
        create_backbone("resnet18", weights=3)


def test_local_checkpoint_with_wrappers(tmp_path):
    reference, _ = create_backbone("resnet18", num_classes=7)
    state = {"state_dict": {f"module.{k}": v + 1 for k, v in reference.state_dict().items()}}
    torch.save(state, tmp_path / "ckpt.pth")
    model, _ = create_backbone("resnet18", weights=tmp_path / "ckpt.pth", num_classes=7)
    torch.testing.assert_close(model.fc.weight, reference.fc.weight + 1)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_backbone("resnet18", weights=str(tmp_path / "missing.pth"))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="missing keys"):
        load_checkpoint(create_backbone("resnet18").model, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        create_backbone("resnet18", weights="IMAGENET9K")


@pytest.mark.parametrize("name, content", [("truncated.pth", None), ("garbage.pt", b"not a checkpoint" * 4),
                                           ("pickled.pt", "object"), ("broken.safetensors", b"\x00" * 16)])
def test_an_unreadable_checkpoint_names_the_file_and_suggests_no_unsafe_load(tmp_path, name, content):
    path = tmp_path / name
    if content is None:  # a real checkpoint cut short (an interrupted download)
        torch.save(create_backbone("resnet18").model.state_dict(), path)
        path.write_bytes(path.read_bytes()[:4096])
    elif content == "object":  # pickled Python objects besides tensors: loading them would run code
        torch.save({"fc.weight": torch.zeros(2), "optimizer": torch.optim.SGD}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot be read as a state dict of tensors") as err:
        create_backbone("resnet18", weights=str(path))
    assert repr(str(path)) in str(err.value) and "weights_only" not in str(err.value)


def test_torchvision_default_weights_from_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth"):
        create_backbone("resnet18", weights="default")
    source, _ = create_backbone("resnet18")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(source.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    model, _ = create_backbone("resnet18", weights="IMAGENET1K_V1")
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)


def test_timm_default_weights_from_hf_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match="resnet18"):
        create_backbone("timm/resnet18", weights="default")
    source, _ = create_backbone("timm/resnet18")
    snapshot = tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0123abcd")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors"))
    model, _ = create_backbone("timm/resnet18", weights="default")
    torch.testing.assert_close(model.fc.weight, source.fc.weight)


def test_googlenet_pretrained_weights_get_torchvisions_transform_input(tmp_path, monkeypatch):
    # torchvision's googlenet(weights=...) switches transform_input on and drops the aux heads; a
    # state dict loaded into a plain random-init GoogLeNet would feed it wrongly normalised inputs
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    source = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(source.state_dict(), tmp_path / "hub" / "checkpoints" / Path(weights.url).name)
    model, _ = create_backbone("googlenet", weights="default")
    assert model.transform_input is True and model.aux1 is None
    torch.testing.assert_close(model.conv1.conv.weight, source.conv1.conv.weight)
    random_init, _ = create_backbone("googlenet")  # no FutureWarning (filterwarnings=error)
    assert random_init.transform_input is False


def test_random_init_is_seeded_by_the_name_and_leaves_the_callers_rng():
    """The same name builds the same random model (runs, resumes and DDP ranks agree); the caller's RNG is untouched."""
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, again = create_backbone("timm/resnet18").model, create_backbone("timm/resnet18").model
    assert torch.equal(torch.get_rng_state(), state)
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    other = create_backbone("torchvision/resnet18").model
    assert not torch.equal(other.conv1.weight, first.conv1.weight)
    seeded = create_backbone("timm/resnet18", seed=1).model  # `cam-bench run --seed 1`
    assert not torch.equal(seeded.conv1.weight, first.conv1.weight)
    assert torch.equal(create_backbone("timm/resnet18", seed=1).model.conv1.weight, seeded.conv1.weight)
