"""Hugging Face classifiers as backbones: local directories, the offline hub cache, preprocessing, layouts."""
import shutil

import huggingface_hub
import pytest
import torch
import transformers as tf

from benchmark.runner.config import RunConfig, validate
from benchmark.runtime.backbones import create_backbone, list_backbones
from benchmark.runtime.hf_backbone import HFClassifier, hf_preprocessing

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=5)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    """A saved tiny random ViT classifier + its image processor, and the model object itself."""
    folder = tmp_path_factory.mktemp("tiny_vit")
    torch.manual_seed(0)
    model = tf.ViTForImageClassification(tf.ViTConfig(**TINY)).eval()
    model.save_pretrained(folder)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                         ).save_pretrained(folder)
    return folder, model


def test_local_directory_gives_the_hf_logits(vit_dir, monkeypatch):
    folder, reference = vit_dir
    x = torch.randn(2, 3, 32, 32)
    model, prep = create_backbone(f"hf/{folder}")
    assert isinstance(model, HFClassifier) and isinstance(model.model, tf.ViTForImageClassification)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(pixel_values=x).logits)
    assert (prep.input_size, prep.resize_size, prep.crop_size) == ((3, 32, 32), 32, 32)
    assert (prep.mean, prep.std, prep.interpolation) == ((0.5,) * 3, (0.5,) * 3, "bilinear")
    monkeypatch.chdir(folder.parent)  # a relative directory
    assert create_backbone(f"hf/./{folder.name}", weights="default").model.num_prefix_tokens == 1


def test_random_weights_and_checkpoint_into_the_inner_model(vit_dir, tmp_path):
    folder, reference = vit_dir
    random, _ = create_backbone(f"hf/{folder}", weights="random")
    assert type(random.model) is tf.ViTForImageClassification
    assert not torch.equal(random.model.classifier.weight, reference.classifier.weight)
    loaded, _ = create_backbone(f"hf/{folder}", weights=folder / "model.safetensors")  # saved (legacy) key names
    torch.testing.assert_close(loaded.model.classifier.weight, reference.classifier.weight)
    shifted = {f"model.{k}": v + 1 for k, v in reference.state_dict().items()}  # a wrapper's in-memory state dict
    torch.save({"state_dict": shifted}, tmp_path / "wrapper.pt")
    loaded, _ = create_backbone(f"hf/{folder}", weights=tmp_path / "wrapper.pt")
    torch.testing.assert_close(loaded.model.classifier.weight, reference.classifier.weight + 1)
    with pytest.raises(ValueError, match="missing_keys"):
        torch.save({"classifier.weight": torch.zeros(5, 32)}, tmp_path / "partial.pt")
        create_backbone(f"hf/{folder}", weights=tmp_path / "partial.pt")
    assert create_backbone(f"hf/{folder}", weights="random", num_classes=3).model(torch.zeros(1, 3, 32, 32)).shape \
        == (1, 3)
    with pytest.raises(ValueError, match="`num_classes` to be None or the pretrained head's 5 labels"):
        create_backbone(f"hf/{folder}", num_classes=3)
    with pytest.raises(ValueError, match="Expected `weights`"):
        create_backbone(f"hf/{folder}", weights="IMAGENET1K_V1")


def test_default_target_layer_is_the_last_blocks_first_norm_on_tokens(vit_dir):
    folder, _ = vit_dir
    model, _ = create_backbone(f"hf/{folder}")
    assert model.default_target_layer.endswith("1.layernorm_before")
    seen = []
    layer = model.get_submodule(model.default_target_layer)
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        model(torch.zeros(2, 3, 32, 32))
    finally:
        handle.remove()
    assert seen == [(2, 1 + 4 * 4, 32)]  # class token + the 4 x 4 patch grid, hidden size 32


@pytest.mark.parametrize("build, prefix, has_layer", [
    (lambda: tf.DeiTForImageClassification(tf.DeiTConfig(**TINY)), 2, True),
    (lambda: tf.Dinov2WithRegistersForImageClassification(
        tf.Dinov2WithRegistersConfig(**TINY, num_register_tokens=4)), 5, True),
    (lambda: tf.SwinForImageClassification(tf.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2, num_labels=5)),
     0, False),
    (lambda: tf.ConvNextForImageClassification(tf.ConvNextConfig(
        num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)), 0, False),
])
def test_prefix_tokens_and_target_layer_by_model_type(build, prefix, has_layer):
    model = HFClassifier(build().eval())
    assert model.num_prefix_tokens == prefix
    assert (model.default_target_layer is not None) == has_layer
    if has_layer:
        seen = []
        model.get_submodule(model.default_target_layer).register_forward_hook(lambda m, a, out: seen.append(out))
        model(torch.zeros(1, 3, 32, 32))
        assert seen[0].shape[1] == prefix + 16
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def test_cached_repo_id_loads_offline(vit_dir, tmp_path, monkeypatch):
    folder, reference = vit_dir
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--tiny-org--tiny-vit"
    shutil.copytree(folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    model, _ = create_backbone("hf/tiny-org/tiny-vit")
    torch.testing.assert_close(model.model.classifier.weight, reference.classifier.weight)


def test_missing_repo_or_directory_says_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("hf/cam-bench-tests/surely-not-cached-vit", f"hf/{tmp_path / 'missing'}", "hf/./no/such/dir"):
        with pytest.raises(FileNotFoundError, match="Nothing is downloaded") as err:
            create_backbone(name)
        assert "huggingface-cli download" in str(err.value)
        with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):  # refused before any model is built
            validate(RunConfig(backbones=[name]))


def test_missing_preprocessor_config_is_named(vit_dir, tmp_path):
    folder, _ = vit_dir
    shutil.copytree(folder, tmp_path / "vit", ignore=shutil.ignore_patterns("preprocessor_config.json"))
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        create_backbone(f"hf/{tmp_path / 'vit'}")


def test_checkpoint_without_classifier_head_is_refused(tmp_path):
    tf.ViTModel(tf.ViTConfig(**TINY)).save_pretrained(tmp_path)
    tf.ViTImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="classifier"):
        create_backbone(f"hf/{tmp_path}")


def test_processor_mapping_crop_pct_center_crop_and_errors():
    convnext = hf_preprocessing(tf.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875))
    assert (convnext.resize_size, convnext.crop_size, convnext.interpolation) == (256, 224, "bicubic")
    warped = hf_preprocessing(tf.ConvNextImageProcessor(size={"shortest_edge": 384}, crop_pct=0.875))
    assert (warped.resize_size, warped.crop_size) == (384, 384)  # ConvNeXt warps at >= 384
    deit = hf_preprocessing(tf.DeiTImageProcessor(image_mean=[0.485, 0.456, 0.406]))  # resize 256, crop 224
    assert (deit.input_size, deit.resize_size, deit.crop_size) == ((3, 224, 224), 256, 224)
    assert deit.mean == pytest.approx((0.485, 0.456, 0.406))
    assert hf_preprocessing(tf.ViTImageProcessor(do_normalize=False)).std == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="square"):
        hf_preprocessing(tf.ViTImageProcessor(size={"height": 32, "width": 48}))
    with pytest.raises(ValueError, match="resample"):
        hf_preprocessing(tf.ViTImageProcessor(resample=1))  # LANCZOS


def test_naming_and_listing():
    with pytest.raises(KeyError, match="hf/"):
        create_backbone("hf/")
    with pytest.raises(ValueError, match="no|registry"):
        list_backbones("hf")
