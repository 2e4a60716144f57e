"""MNIST and CIFAR-10 datamodules on mini copies written in the official formats (tests/fixtures_digits.py).

References: the closed form ``(x / 255 - mean) / std`` of the written bytes, and torchvision's own readers
(``torchvision.datasets.MNIST`` and, with its MD5 check bypassed, ``torchvision.datasets.CIFAR10``).
"""
import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from pytorch_lightning import Trainer
from torchvision.datasets import MNIST as TorchvisionMNIST
from torchvision.models import resnet18
from torchvision.transforms import v2

from benchmark.runtime.backbones import Preprocessing, create_backbone
from benchmark.runtime.module import ExplainerModule
from datamodules import create_datamodule, describe_datamodule, list_datamodules
from datamodules.cifar import CIFAR10, CIFAR10DataModule, read_cifar10
from datamodules.errors import AnnotationError
from datamodules.mnist import MNIST, MNISTDataModule, read_mnist
from tests.fixtures_digits import CIFAR10_CLASSES, make_cifar10, make_mnist

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN, CIFAR_STD = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    return root, make_mnist(root, n=20), make_mnist(root, n=12, split="train", seed=1)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, make_cifar10(root, n=6), make_cifar10(root, n=3, split="train", seed=1)


def test_mnist_items_are_the_written_bytes_normalised(mnist_root):
    root, (images, labels), _ = mnist_root
    ds = MNIST(root)
    assert len(ds) == 20 and ds.classes == [str(d) for d in range(10)]
    for i in (0, 17):
        s = ds[i]
        expected = (torch.from_numpy(images[i]).double() / 255 - MNIST_MEAN) / MNIST_STD
        assert s["image"].shape == (1, 28, 28) and s["image"].dtype == torch.float32
        torch.testing.assert_close(s["image"][0].double(), expected, rtol=0, atol=1e-6)
        assert (s["label"], s["index"], s["id"]) == (int(labels[i]), i, f"t10k#{i:05d}")
        assert "boxes" not in s and s["counts"]["images_skipped"] == 0


def test_mnist_matches_torchvision_reader(mnist_root):
    root, _, _ = mnist_root
    for split, train in (("test", False), ("train", True)):
        images, labels = read_mnist(root, split)
        ref = TorchvisionMNIST(str(root), train=train, download=False)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.equal(images, ref.data) and torch.equal(labels, ref.targets)
    normalise = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([MNIST_MEAN], [MNIST_STD])])
    ref = TorchvisionMNIST(str(root), train=False, download=False, transform=normalise)
    ds = MNIST(root, split="test")
    for i in (3, 19):
        torch.testing.assert_close(ds[i]["image"], ref[i][0].as_subclass(torch.Tensor), rtol=0, atol=1e-6)
        assert ds[i]["label"] == ref[i][1]


def test_mnist_root_variants_gzip_and_limit(mnist_root, tmp_path):
    root, (images, labels), (train_images, _) = mnist_root
    for where in (root / "MNIST", root / "MNIST" / "raw"):
        assert torch.equal(read_mnist(where)[0], torch.from_numpy(images))
    gz_images, gz_labels = make_mnist(tmp_path / "gz", n=20, gz=True)
    assert sorted(p.name for p in (tmp_path / "gz" / "MNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    read = read_mnist(tmp_path / "gz")
    assert torch.equal(read[0], torch.from_numpy(gz_images)) and torch.equal(read[1], torch.from_numpy(gz_labels))
    ds = MNIST(root, split="train", limit=5)
    assert len(ds) == 5 and torch.equal(ds.images, torch.from_numpy(train_images[:5]))
    assert ds[4]["id"] == "train#00004" and len(MNIST(root, limit=100)) == 20


def test_mnist_datamodule_batches_and_registry(mnist_root):
    root, (_, labels), _ = mnist_root
    dm = create_datamodule("mnist", root=root, limit=10, batch_size=4)
    assert isinstance(dm, MNISTDataModule) and dm.preprocessing.input_size == (1, 28, 28)
    dm.prepare_data()
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0]["image"].shape == (4, 1, 28, 28) and batches[2]["label"].tolist() == labels[8:10].tolist()
    assert batches[1]["id"] == ["t10k#00004", "t10k#00005", "t10k#00006", "t10k#00007"]
    assert {"mnist", "cifar10"} <= set(list_datamodules()) and "IDX" in describe_datamodule("mnist")
    assert isinstance(create_datamodule("cifar10", root="x"), CIFAR10DataModule)


def test_mnist_three_channel_preprocessing_replicates_grey(mnist_root):
    root, (images, _), _ = mnist_root
    prep = Preprocessing((3, 28, 28), 28, 28, (0.5,) * 3, (0.5,) * 3, "bilinear")
    image = MNIST(root, preprocessing=prep)[2]["image"]
    expected = torch.from_numpy(images[2]).float() / 255 * 2 - 1
    assert image.shape == (3, 28, 28) and all(torch.allclose(c, expected, atol=1e-6) for c in image)
    with pytest.raises(ValueError, match=r"Expected `preprocessing.input_size\[0\] \(channels\)` to be one of"):
        MNIST(root, preprocessing=Preprocessing((4, 28, 28), 28, 28, (0.5,) * 4, (0.5,) * 4, "bilinear"))


def test_mnist_missing_files_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)t10k-images-idx3-ubyte and t10k-labels.*MNIST/.*raw/"):
        MNIST(tmp_path)
    with pytest.raises(FileNotFoundError, match="MNIST train files train-images-idx3-ubyte"):
        MNISTDataModule(tmp_path, split="train").prepare_data()
    make_mnist(tmp_path, n=3)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"\(or \.gz\) not found"):
        read_mnist(tmp_path)


def test_mnist_malformed_idx(tmp_path):
    make_mnist(tmp_path, n=4)
    raw = tmp_path / "MNIST" / "raw"
    images, labels = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
    good_images, good_labels = images.read_bytes(), labels.read_bytes()
    cases = [
        (images, struct.pack(">i", 2049) + good_images[4:], r"images-idx3-ubyte: magic number 2049, expected 2051"),
        (images, good_images[:-1], r"t10k-images-idx3-ubyte: the header says shape \(4, 28, 28\) \(3136 bytes\), "
                                   r"but 3135 bytes follow it"),
        (images, good_images[:10], r"t10k-images-idx3-ubyte: 10 bytes, shorter than the 16-byte IDX header"),
        (labels, struct.pack(">2i", 2049, 3) + good_labels[8:11], r"holds 4 images but .*t10k-labels-idx1-ubyte "
                                                                  r"holds 3 labels"),
        (labels, good_labels[:-1] + bytes([10]), r"t10k-labels-idx1-ubyte: label 10 at position 3, expected 0-9"),
    ]
    for path, data, pattern in cases:
        path.write_bytes(data)
        with pytest.raises(AnnotationError, match=pattern):
            read_mnist(tmp_path)
        with pytest.raises(AnnotationError, match=pattern):
            MNIST(tmp_path, on_error="skip")  # a broken file has no readable samples to skip
        images.write_bytes(good_images)
        labels.write_bytes(good_labels)
    labels.unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(good_labels)[:-6])
    with pytest.raises(AnnotationError, match=r"t10k-labels-idx1-ubyte\.gz: not a readable gzip file"):
        read_mnist(tmp_path)


def test_bad_arguments(mnist_root):
    root = mnist_root[0]
    for cls in (MNIST, MNISTDataModule, CIFAR10, CIFAR10DataModule):
        with pytest.raises(ValueError, match=r"^Expected `split` to be one of \('test', 'train'\), but got 'tset'\.$"):
            cls(root, split="tset")
        with pytest.raises(TypeError, match="Expected `limit` to be an int > 0, but got str"):
            cls(root, limit="3")
        with pytest.raises(ValueError, match="Expected `limit` to be an int > 0, but got 0"):
            cls(root, limit=0)
        with pytest.raises(TypeError, match="Expected `root` to be a path"):
            cls(3)
    with pytest.raises(ValueError, match="`on_error` to be one of"):
        MNISTDataModule(root, on_error="ignore")
    with pytest.raises(ValueError, match="is predict-only"):
        MNISTDataModule(root).setup("fit")


def test_cifar_items_are_the_written_bytes_normalised(cifar_root):
    root, (data, labels), _ = cifar_root
    ds = CIFAR10(root)
    assert len(ds) == 6 and ds.classes == list(CIFAR10_CLASSES)
    for i in (0, 5):
        s = ds[i]
        planes = torch.from_numpy(data[i]).reshape(3, 32, 32).double() / 255  # red, green, blue planes, row-major
        expected = (planes - CIFAR_MEAN.double()[:, None, None]) / CIFAR_STD.double()[:, None, None]
        assert s["image"].shape == (3, 32, 32) and "boxes" not in s
        torch.testing.assert_close(s["image"].double(), expected, rtol=0, atol=1e-5)
        assert (s["label"], s["index"], s["id"]) == (int(labels[i]), i, f"test_batch#{i:05d}")


def test_cifar_matches_torchvision_reader(cifar_root, monkeypatch):
    root, _, _ = cifar_root
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # our mini files' MD5 differ
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    for split, train in (("test", False), ("train", True)):
        ref = tv_cifar.CIFAR10(str(root), train=train, download=False)
        images, labels = read_cifar10(root, split)
        assert torch.equal(images, torch.from_numpy(ref.data).permute(0, 3, 1, 2))
        assert labels.tolist() == ref.targets and CIFAR10(root, split).classes == ref.classes


def test_cifar_train_split_root_variants_and_python3_pickles(cifar_root, tmp_path):
    root, _, (data, labels) = cifar_root
    ds = CIFAR10(root / "cifar-10-batches-py", split="train")
    assert len(ds) == 15 and [ds.sample_id(i) for i in (0, 3, 14)] == [
        "data_batch_1#00000", "data_batch_2#00000", "data_batch_5#00002"]
    assert ds[7]["index"] == 7 and ds[7]["label"] == labels[7]
    py3_data, py3_labels = make_cifar10(tmp_path, n=5, py2=False)
    images, read_labels = read_cifar10(tmp_path)
    assert torch.equal(images.reshape(5, -1), torch.from_numpy(py3_data))
    assert read_labels.tolist() == py3_labels.tolist()
    limited = CIFAR10(root, split="train", limit=4)
    assert len(limited) == 4 and limited.sample_id(3) == "data_batch_2#00000"
    grey = CIFAR10(tmp_path, preprocessing=Preprocessing((1, 32, 32), 32, 32, (0.5,), (0.5,), "bilinear"))[0]
    assert grey["image"].shape == (1, 32, 32)


def test_cifar_missing_files_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)\['batches.meta', 'test_batch'\] not found.*cifar-10-batches"):
        CIFAR10(tmp_path)
    make_cifar10(tmp_path, n=2)
    with pytest.raises(FileNotFoundError, match=r"(?s)CIFAR-10 train files \['data_batch_1', .*data_batch_5"):
        CIFAR10DataModule(tmp_path, split="train").prepare_data()


def test_cifar_malformed_pickles(tmp_path):
    make_cifar10(tmp_path, n=3)
    folder = tmp_path / "cifar-10-batches-py"
    batch, good = folder / "test_batch", (folder / "test_batch").read_bytes()
    data = np.zeros((3, 3072), dtype=np.uint8)
    cases = [
        ({b"data": data}, r"test_batch: missing \['labels'\] \(found keys \['data'\]\)"),
        ({b"data": data[:, :3000], b"labels": [0, 1, 2]}, r"test_batch: expected `data` to be a uint8 array of shape "
                                                          r"\(N, 3072\), but got ndarray uint8 \(3, 3000\)"),
        ({b"data": data.astype(np.float32), b"labels": [0, 1, 2]}, r"but got ndarray float32"),
        ({b"data": data, b"labels": [0, 1]}, r"test_batch: 3 images but 2 labels"),
        ({b"data": data, b"labels": [0, 10, 1]}, r"test_batch: label 10 at row 1, expected 0-9"),
        ([data], r"test_batch: expected a pickled dict, but got list"),
        ({b"data": data, b"labels": [0, 1, 2], b"extra": shutil.rmtree}, r"global shutil\.rmtree is not allowed"),
    ]
    for entry, pattern in cases:
        batch.write_bytes(pickle.dumps(entry, protocol=2))
        with pytest.raises(AnnotationError, match=pattern):
            read_cifar10(tmp_path)
        with pytest.raises(AnnotationError, match=pattern):
            CIFAR10(tmp_path, on_error="skip")
    batch.write_bytes(good[: len(good) // 2])
    with pytest.raises(AnnotationError, match=r"test_batch: not a readable CIFAR pickle \((EOF|Unpickling)Error: "):
        read_cifar10(tmp_path)
    batch.write_bytes(good)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": "cat dog"}))
    with pytest.raises(AnnotationError, match=r"batches\.meta: expected `label_names` to be a list of strings"):
        read_cifar10(tmp_path)


def test_trainer_predict_mnist_with_the_digits_cnn(mnist_root, tmp_path):
    root = mnist_root[0]
    model, prep = create_backbone("digits/mnist_cnn")
    dm = MNISTDataModule(root, limit=7, preprocessing=prep, batch_size=3)
    module = ExplainerModule(model, ["gradcam"], input_size=(1, 28, 28))
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                      enable_progress_bar=False, enable_model_summary=False)
    records = [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
    assert sorted(r["index"] for r in records) == list(range(7))
    assert all(r["saliency"].shape == (28, 28) for r in records)


def test_trainer_predict_cifar_with_resnet18(cifar_root, tmp_path):
    root = cifar_root[0]
    dm = CIFAR10DataModule(root, batch_size=4)
    module = ExplainerModule(resnet18(num_classes=10), ["gradcam"], input_size=(3, 32, 32))
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                      enable_progress_bar=False, enable_model_summary=False)
    records = [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
    assert sorted(r["index"] for r in records) == list(range(6))
    assert all(r["saliency"].shape == (32, 32) for r in records)
