"""The Rectifier's global encoder: torchvision's ResNet on a 6-channel input (concat of x₀ and P_t).

With the default ``layers=(3, 4, 6, 3)`` and ``widths=(64, 128, 256, 512)`` this is exactly torchvision's
ResNet-34 (same ``BasicBlock``, same module names, so an ImageNet state dict loads into it); the tests and demo use
the same class with fewer blocks and narrower widths. The 7×7 stem takes 6 channels: from ImageNet weights, both
halves get the RGB kernel × ½, so concat(x, x) responds like the pretrained stem to x (HyperStyle's habit for its
6-channel input). The classifier head (avgpool, fc) is dropped: the output is the last feature map, which every
subnet reduces to its own 1×1 code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.weights import load_weights

RESNET34 = ((3, 4, 6, 3), (64, 128, 256, 512))


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResNetEncoder(ResNet):
    """torchvision ResNet (BasicBlock) trunk without its head; ``norm="group"`` swaps BatchNorm for GroupNorm
    (for batches too small for batch statistics; ImageNet weights need ``batch``)."""

    def __init__(
        self,
        in_channels: int = 6,
        layers: Sequence[int] = RESNET34[0],
        widths: Sequence[int] = RESNET34[1],
        norm: str = "batch",
    ) -> None:
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes the widths 64…512: build the same modules ourselves
        if len(layers) != 4 or len(widths) != 4:
            raise UserError(f"encoder layers/widths need 4 entries each, got {list(layers)} / {list(widths)}")
        self._norm_layer = {"batch": nn.BatchNorm2d, "group": _group_norm}[norm]
        self.inplanes, self.dilation, self.groups, self.base_width = int(widths[0]), 1, 1, 64
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, int(widths[0]), int(layers[0]))
        self.layer2 = self._make_layer(BasicBlock, int(widths[1]), int(layers[1]), stride=2)
        self.layer3 = self._make_layer(BasicBlock, int(widths[2]), int(layers[2]), stride=2)
        self.layer4 = self._make_layer(BasicBlock, int(widths[3]), int(layers[3]), stride=2)
        self.out_channels = int(widths[3])
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @staticmethod
    def feature_size(size: int) -> int:
        """Side of the output map for a ``size`` input: five stride-2 stages, each ceil(n / 2)."""
        for _ in range(5):
            size = (size + 1) // 2
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_imagenet(self, path: str | Path) -> None:
        """Load a torchvision ``resnet34`` state dict (e.g. ``resnet34-b627a593.pth``) from a local file."""
        state = load_weights(path, "ResNet-34 ImageNet weights", expected="a torchvision resnet34 state dict")
        if not isinstance(state, dict):
            raise UserError(f"{path}: expected a torchvision resnet34 state dict, got {type(state).__name__}")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        stem = state.get("conv1.weight")
        if stem is not None and stem.shape[1] == 3 and self.conv1.in_channels == 6:
            state["conv1.weight"] = torch.cat([stem, stem], dim=1) * 0.5
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1:2] or [str(exc)[:200]]
            raise UserError(
                f"{path} does not fit the encoder (it must be ResNet-34 with norm=batch): {first[0].strip()}"
            ) from exc
