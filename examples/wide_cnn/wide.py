"""A wider, deeper CNN than the seed network, built from a trial's config (`model: wide:build`)."""

from torch import nn


def build(width: int, depth: int, dropout: float = 0.0, num_classes: int = 10) -> nn.Module:
    """`depth` conv blocks of `width`, `2×width`, … channels (3×3, batch norm, ReLU, 2×2 pooling
    after the first two), global average pooling, dropout, a linear layer: logits out."""
    layers, channels = [], 1
    for block in range(depth):
        out = width * 2 ** min(block, 2)
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        if block < 2:
            layers.append(nn.MaxPool2d(2))  # 28 -> 14 -> 7
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(channels, num_classes))
