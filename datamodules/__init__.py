"""LightningDataModules of cam-bench."""
from datamodules.random_images import RandomImages, RandomImagesDataModule

__all__ = ["RandomImages", "RandomImagesDataModule"]
