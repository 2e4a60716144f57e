"""Digit-recognition backbones: a small MNIST CNN for the Grad-CAM analysis of Nagy, Nimara and Qian.

``create_backbone("digits/mnist_cnn")`` builds :class:`~benchmark.digits.models.MnistCNN` with the MNIST
preprocessing (1 x 28 x 28, mean/std 0.1307/0.3081); ``weights=None`` is a random initialisation and a
path loads a checkpoint written by ``python -m benchmark.digits.train`` (no trained weights are shipped).
"""
from benchmark.digits.models import DIGITS_MODELS, MnistCNN, build_digits_model

__all__ = ["DIGITS_MODELS", "MnistCNN", "build_digits_model"]
