"""The seed network: a small residual CNN for 28×28 digits."""

from __future__ import annotations

import copy

import torch
from torch import nn

FEATURES = 12 * 5 * 5  # channels × height × width after the second block
HIDDEN = 300
NUM_CLASSES = 10


def conv_block(in_channels: int, out_channels: int, padding: int, batch_norm: bool) -> nn.Sequential:
    """Conv 5×5 -> (batch norm) -> ReLU -> max-pool 2×2, computed as max-pool then ReLU: the two
    commute (ReLU is monotone), so outputs and gradients are the same, and ReLU touches a quarter
    of the elements. Neither has parameters: the state dict is the same as in the written order."""
    norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
    conv = nn.Conv2d(in_channels, out_channels, 5, padding=padding, bias=not batch_norm)
    return nn.Sequential(conv, norm, nn.MaxPool2d(2), nn.ReLU())


class SeedNet(nn.Module):
    """Two conv+pool blocks to 12×5×5, FC 300 with an additive skip, FC 10; logits out.

    The skip adds the flattened features to the first FC layer's output before its
    ReLU: `relu(fc1(x) + x)`. Every batch-norm layer is a registered submodule, so
    its parameters reach the optimizer and `eval()` switches it to running stats.
    """

    def __init__(self, batch_norm: bool = True, skip: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.skip = skip
        self.features = nn.Sequential(
            conv_block(1, 6, padding=2, batch_norm=batch_norm),  # 28×28 -> 6×14×14
            conv_block(6, 12, padding=0, batch_norm=batch_norm),  # -> 12×5×5
            nn.Flatten(),
        )
        self.fc1 = nn.Linear(FEATURES, HIDDEN, bias=not batch_norm)
        self.fc1_norm = nn.BatchNorm1d(HIDDEN) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images)
        hidden = self.fc1_norm(self.fc1(x))
        if self.skip:
            hidden = hidden + x
        return self.fc2(self.dropout(torch.relu(hidden)))


def folded_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a seed network with batch norm, each batch-norm layer folded into the
    convolution or linear layer before it (PyTorch's `fuse_conv_bn_eval`/`fuse_linear_bn_eval`):
    the same outputs up to float rounding, two fewer passes over each activation. Any other
    network is returned as it is."""
    if not isinstance(model, SeedNet) or not isinstance(model.fc1_norm, nn.BatchNorm1d):
        return model
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    folded = copy.deepcopy(model).eval()
    for block in folded.features[:2]:
        block[0], block[1] = fuse_conv_bn_eval(block[0], block[1]), nn.Identity()
    folded.fc1, folded.fc1_norm = fuse_linear_bn_eval(folded.fc1, folded.fc1_norm), nn.Identity()
    return folded
