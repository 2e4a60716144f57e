"""The model sees what its own preprocessing would give it, or the backbone is refused (audit fixes).

References: transformers' image processors and timm's ``create_transform`` run on the same image, and
torchvision's own ``get_model(name, weights=...)`` builder for GoogLeNet / Inception-v3.
"""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
import transformers as tf
from PIL import Image

from benchmark.runtime.backbones import _torchvision_file, create_backbone
from benchmark.runtime.hf_backbone import VERIFIED_PROCESSORS, hf_preprocessing


def _smooth_image(height: int, width: int) -> Image.Image:
    """A smooth RGB image: resampling filters agree closely, geometry and channel order do not."""
    yy, xx = np.mgrid[0:height, 0:width] / 300.0
    arr = np.stack([np.sin(6 * xx) + np.cos(4 * yy), np.sin(15 * yy * xx), xx * yy], -1)
    return Image.fromarray(((arr - arr.min()) / (arr.max() - arr.min()) * 255).astype(np.uint8))


SQUARE = _smooth_image(300, 300)


@pytest.mark.parametrize("name", sorted(VERIFIED_PROCESSORS))
def test_every_verified_processor_matches_its_own_output(name):
    processor = getattr(tf, name)()
    theirs = processor(images=SQUARE, return_tensors="pt")["pixel_values"][0].float()
    ours = hf_preprocessing(processor).transform()(SQUARE)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_levit_resizes_the_shortest_edge_by_256_over_224():
    processor = tf.LevitImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    prep = hf_preprocessing(processor)
    assert (prep.resize_size, prep.crop_size) == (256, 224)  # int(256 / 224 * 224), LeViT's fixed rule
    wide = _smooth_image(300, 450)  # a non-square image: the shortest-edge geometry shows
    theirs = processor(images=wide, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(prep.transform()(wide), theirs, atol=1e-4, rtol=0)


def test_efficientnet_include_top_divides_by_std_twice():
    processor = tf.EfficientNetImageProcessor(size={"height": 64, "width": 64})
    assert processor.include_top  # transformers' default
    prep = hf_preprocessing(processor)
    assert prep.std == pytest.approx(tuple(s * s for s in processor.image_std))
    theirs = processor(images=SQUARE, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(prep.transform()(SQUARE), theirs, atol=1e-4, rtol=0)
    plain = tf.EfficientNetImageProcessor(size={"height": 64, "width": 64}, include_top=False)
    assert hf_preprocessing(plain).std == pytest.approx(tuple(plain.image_std))


@pytest.mark.parametrize("processor, named", [
    (tf.MobileViTImageProcessor(), "do_flip_channel_order=True"),  # BGR input: max |diff| 0.66 before (audit)
    (tf.PerceiverImageProcessor(), "PerceiverImageProcessor is not a verified"),  # crops 256, resizes to 224
    (tf.EfficientNetImageProcessor(rescale_offset=True), "rescale_offset=True"),
    (tf.ViTImageProcessor(do_resize=False), "do_resize=False"),
    (tf.ViTImageProcessor(do_pad=True), "do_pad=True"),
])
def test_untranslated_steps_are_refused_with_what_to_pass(processor, named):
    with pytest.raises(ValueError, match="Expected an image processor whose steps cam-bench reproduces") as err:
        hf_preprocessing(processor)
    assert named in str(err.value) and "preprocessor_config.json" in str(err.value)
    assert "hf//path/to/copy" in str(err.value)


def test_hf_backbone_with_an_unverified_processor_is_refused(tmp_path):
    config = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, num_labels=3)
    tf.ViTForImageClassification(config).save_pretrained(tmp_path)
    tf.MobileViTImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                               ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="do_flip_channel_order"):
        create_backbone(f"hf/{tmp_path}")


def test_timm_squash_crop_mode_matches_timms_own_transform():
    name = "convnextv2_nano.fcmae_ft_in22k_in1k_384"
    model, prep = create_backbone(f"timm/{name}", num_classes=3)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["crop_mode"] == "squash" and prep.resize_mode == "squash"
    wide = _smooth_image(300, 450)
    theirs = timm.data.create_transform(**cfg)(wide)
    shorter_side = torchvision.transforms.v2.Compose([  # what resize-the-shorter-side + centre crop would feed
        torchvision.transforms.v2.ToImage(),
        torchvision.transforms.v2.Resize(int(384 / cfg["crop_pct"]), antialias=True,
                                         interpolation=torchvision.transforms.v2.InterpolationMode.BICUBIC),
        torchvision.transforms.v2.CenterCrop(384), torchvision.transforms.v2.ToDtype(torch.float32, scale=True),
        torchvision.transforms.v2.Normalize(list(cfg["mean"]), list(cfg["std"]))])(wide)
    assert (shorter_side - theirs).abs().max() > 0.5  # the two geometries really differ
    torch.testing.assert_close(prep.transform()(wide), theirs, atol=0.02, rtol=0)


def test_timm_center_crop_mode_matches_timms_own_transform():
    name = "convnextv2_nano.fcmae_ft_in22k_in1k"  # crop_mode 'center', crop_pct 0.875
    model, prep = create_backbone(f"timm/{name}", num_classes=3)
    cfg = timm.data.resolve_data_config({}, model=model)
    wide = _smooth_image(300, 450)
    torch.testing.assert_close(prep.transform()(wide), timm.data.create_transform(**cfg)(wide), atol=0.02, rtol=0)


def test_timm_non_square_input_size_is_refused():
    name = "vit_base_patch16_sapiens2.fb"
    assert timm.models.get_pretrained_cfg(name).input_size == (3, 1024, 768)
    with pytest.raises(ValueError, match="square input size.*1024 x 768"):
        create_backbone(f"timm/{name}", num_classes=3)


@pytest.mark.parametrize("name, enum, size", [("googlenet", torchvision.models.GoogLeNet_Weights, 64),
                                              ("inception_v3", torchvision.models.Inception_V3_Weights, 80)])
def test_torchvision_file_by_path_gets_transform_input_like_the_builder(tmp_path, monkeypatch, name, enum, size):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = enum.IMAGENET1K_V1
    torch.manual_seed(0)
    source = torchvision.models.get_model(name, weights=None, aux_logits=True, init_weights=True)
    path = tmp_path / "hub" / "checkpoints" / Path(weights.url).name  # a stand-in with torchvision's file name
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    reference = torchvision.models.get_model(name, weights=weights).eval()  # torchvision's builder, from the cache
    model, _ = create_backbone(name, weights=str(path))
    assert model.transform_input is True
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    other = tmp_path / "my_own_training.pth"  # any other file: the builder's random-init default, documented
    torch.save(source.state_dict(), other)
    assert create_backbone(name, weights=str(other)).model.transform_input is False


def test_a_renamed_torchvision_file_is_recognised_by_its_sha256(tmp_path):
    path = tmp_path / "renamed.pth"
    path.write_bytes(b"stand-in for a torchvision weights file")
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]

    class FakeEnum:  # torchvision's naming: <name>-<first 8 hex digits of the file's SHA-256>.pth
        members = [type("W", (), {"url": f"https://download.pytorch.org/models/googlenet-{prefix}.pth"})]

        def __iter__(self):
            return iter(self.members)

    assert _torchvision_file(str(path), FakeEnum())
    assert not _torchvision_file(str(path), torchvision.models.GoogLeNet_Weights)
