"""Built-in PyTorch models for the ``torch`` problem (``problem.params.model``).

Each factory takes the shape of one input sample ``in_shape`` and the number of outputs
``n_classes`` (filled in from the data) plus its own keyword arguments
(``problem.params.model_args``):

``resnet20``
    The CIFAR ResNet of He et al. (2016, §4.2) with ``n = 3``: a 3x3 convolution with 16
    filters, three stages of three basic blocks (two 3x3 convolutions, each with BatchNorm
    and ReLU) with 16, 32 and 64 filters, stride 2 at the start of stages 2 and 3, identity
    shortcuts that subsample and zero-pad the channels (option A, no parameters), global
    average pooling and a linear layer: 269,722 parameters for 3 x 32 x 32 inputs and 10
    classes (the paper's "0.27M"). Kaiming-normal convolutions, as in the common CIFAR
    reference implementations.
``cnn``
    A small convolutional network: two 3x3 convolutions (``channels`` 16 and 32) with ReLU
    and 2x2 max pooling, then a linear layer.
``mlp``
    The seed-000 network: ``hidden = (128, 64)`` fully connected ReLU layers and a linear
    output, inputs flattened; weights ``N(0, 2 / fan_in)`` (He) in the hidden layers and
    ``N(0, 2 / (fan_in + fan_out))`` (Glorot) in the output layer, zero biases, as the NumPy
    ``mlp`` problem draws them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

__all__ = ["resnet20", "cnn", "mlp", "MODELS"]


class _Shortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels on both sides."""

    def __init__(self, stride: int, pad: int):
        super().__init__()
        self.stride = stride
        self.pad = pad

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return functional.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = (nn.Identity() if stride == 1 and in_planes == planes
                         else _Shortcut(stride, (planes - in_planes) // 2))

    def forward(self, x):
        out = functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return functional.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet with ``6 n + 2`` layers (He et al. 2016, §4.2); ``n = 3`` is ResNet-20."""

    def __init__(self, in_channels: int, n_classes: int, blocks: int = 3, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, n_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x):
        out = functional.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _image_shape(in_shape, model: str):
    if len(in_shape) != 3:
        raise ValueError(f"{model} takes images (channels, height, width); the data gives "
                         f"rows of shape {tuple(in_shape)} (use image data such as cifar10 "
                         "or digits)")
    return in_shape


def resnet20(in_shape=(3, 32, 32), n_classes: int = 10, width: int = 16) -> ResNet:
    """ResNet-20 for images of shape ``in_shape`` (module docstring)."""
    channels, _, _ = _image_shape(in_shape, "resnet20")
    return ResNet(channels, n_classes, blocks=3, width=width)


def cnn(in_shape=(1, 8, 8), n_classes: int = 10, channels=(16, 32)) -> nn.Sequential:
    """Two convolution + ReLU + max-pool stages and a linear layer (module docstring)."""
    in_channels, height, width = _image_shape(in_shape, "cnn")
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        in_channels = out_channels
        height, width = height // 2, width // 2
    layers += [nn.Flatten(), nn.Linear(in_channels * height * width, n_classes)]
    return nn.Sequential(*layers)


def mlp(in_shape=(64,), n_classes: int = 10, hidden=(128, 64)) -> nn.Sequential:
    """The seed-000 ReLU network (module docstring)."""
    widths = (math.prod(in_shape), *hidden, n_classes)
    layers: list[nn.Module] = [nn.Flatten()]
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        linear = nn.Linear(fan_in, fan_out)
        last = index == len(widths) - 2
        std = math.sqrt(2.0 / (fan_in + fan_out) if last else 2.0 / fan_in)
        with torch.no_grad():
            linear.weight.normal_(0.0, std)
            linear.bias.zero_()
        layers.append(linear)
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


#: Built-in models by the name ``problem.params.model`` uses.
MODELS = {"resnet20": resnet20, "cnn": cnn, "mlp": mlp}
