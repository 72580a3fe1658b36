"""A user's own PyTorch model for notebooks/06_torch_model.ipynb: a factory returning a
torch.nn.Module, named in a scenario as ``tiny_cnn.py:build``."""

from torch import nn


def build(channels: int = 8, classes: int = 10) -> nn.Module:
    """One 3x3 convolution, ReLU, 2x2 max-pooling and a linear layer, for 1 x 8 x 8 images."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(channels * 4 * 4, classes))
