"""Which convolutions of the U-Net the Rectifier modulates, chosen by module-name patterns.

The paper modulates "all convolutional layers' kernel weights" of the middle and up-sampling blocks (they carry
both high-level semantics and low-level detail). Patterns are ``fnmatch`` globs over the names of
``unet.named_modules()`` (``mid_block.*``, ``up_blocks.*``, ``up_blocks.0.resnets.*.conv1`` …), so any subset can be
configured for an ablation; every matched module must be an ``nn.Conv2d`` with zero padding (the two application
strategies of :mod:`.apply` rely on it).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from diffedit_lab.utils.errors import UserError

DEFAULT_PATTERNS = ("mid_block.*", "up_blocks.*")


@dataclass(frozen=True)
class LayerSpec:
    """One modulated convolution: its module name and kernel shape ``(C_out, C_in/groups, kh, kw)``."""

    name: str
    out_channels: int
    in_channels: int  # per group (the weight's second axis)
    kernel: tuple[int, int]

    @property
    def weight_name(self) -> str:
        return f"{self.name}.weight"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, *self.kernel)

    @property
    def generated(self) -> int:
        """Numbers the two slim heads generate for this layer: kh·kw·C_in + kh·kw·C_out (not kh·kw·C_in·C_out)."""
        kh, kw = self.kernel
        return kh * kw * (self.in_channels + self.out_channels)


def select_layers(unet: nn.Module, patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[LayerSpec]:
    """The ``nn.Conv2d`` modules of ``unet`` whose names match any pattern, in module order."""
    if not patterns:
        raise UserError("method.net.layers is empty: give module-name patterns such as ['mid_block.*', 'up_blocks.*']")
    specs = []
    for name, module in unet.named_modules():
        if not isinstance(module, nn.Conv2d) or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UserError(f"U-Net layer {name}: padding_mode={module.padding_mode!r} cannot be modulated")
        w = module.weight
        specs.append(LayerSpec(name, int(w.shape[0]), int(w.shape[1]), (int(w.shape[2]), int(w.shape[3]))))
    if not specs:
        raise UserError(
            f"method.net.layers={list(patterns)} matches no convolution of the U-Net "
            "(names look like mid_block.resnets.0.conv1, up_blocks.0.resnets.1.conv2)"
        )
    return specs
