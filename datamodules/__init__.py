"""LightningDataModules of cam-bench (see :mod:`datamodules.registry` for the names)."""
from datamodules.base import CamDataModule, CamDataset, as_preprocessing, imagenet_preprocessing
from datamodules.chestxray import CHESTXRAY14_CLASSES, ChestXray14, ChestXray14DataModule, chestxray_preprocessing
from datamodules.cifar import CIFAR10, CIFAR10DataModule, cifar10_preprocessing, read_cifar10
from datamodules.errors import AnnotationError, CorruptImageError
from datamodules.hf_stream import HFStream, HFStreamDataModule
from datamodules.imagenet import ImageNetVal, ImageNetValDataModule
from datamodules.imagenet_annotations import ImageNetAnnotations
from datamodules.mnist import MNIST, MNISTDataModule, mnist_preprocessing, read_mnist
from datamodules.random_images import RandomImages, RandomImagesDataModule
from datamodules.registry import create_datamodule, describe_datamodule, list_datamodules
from datamodules.sample import collate_samples, make_sample
from datamodules.synthetic import SyntheticShapes, SyntheticShapesDataModule, synthetic_preprocessing
from datamodules.voc import VOC2007, VOC2007DataModule

__all__ = [
    "CHESTXRAY14_CLASSES", "ChestXray14", "ChestXray14DataModule", "chestxray_preprocessing",
    "CIFAR10", "CIFAR10DataModule", "MNIST", "MNISTDataModule", "cifar10_preprocessing", "mnist_preprocessing",
    "read_cifar10", "read_mnist",
    "AnnotationError", "CamDataModule", "CamDataset", "CorruptImageError", "HFStream", "HFStreamDataModule",
    "ImageNetAnnotations", "ImageNetVal", "ImageNetValDataModule", "RandomImages", "RandomImagesDataModule",
    "SyntheticShapes", "SyntheticShapesDataModule", "VOC2007", "VOC2007DataModule", "as_preprocessing",
    "collate_samples", "create_datamodule", "describe_datamodule", "imagenet_preprocessing", "list_datamodules",
    "make_sample", "synthetic_preprocessing",
]
