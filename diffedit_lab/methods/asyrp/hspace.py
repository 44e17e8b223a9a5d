"""Asyrp's h-space: the U-Net bottleneck (the output of ``unet.mid_block``) and the small network that shifts it.

Asyrp (Kwon et al., ICLR 2023) edits with a *frozen* diffusion U-Net by adding ``Δh = f(h, t)`` to the deepest
feature map h during part of the reverse process. ``f`` is the paper's "DeltaBlock": GroupNorm → SiLU → 1×1 conv,
plus a projection of the U-Net's own time embedding, then GroupNorm → SiLU → 1×1 conv (Asyrp's dropout is 0 and is
left out). It sees the same ``emb`` the mid block receives, so it is conditioned on t exactly as the U-Net is.

Initialisation: the last conv is zeroed (``zero_init``), so an untrained module is the identity edit (Δh = 0 and
the U-Net's output is bit for bit the base model's). The released code initialises it like any conv; that stays
available with ``zero_init=false``.

The shift is injected with a forward hook on ``unet.mid_block`` that exists only inside :meth:`HSpaceShift.active`:
the U-Net itself is never modified (the same prior object can be shared with other code, e.g. SDFT's EMA), and
outside that block every call is the plain model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from diffedit_lab.utils.errors import UserError


class DeltaBlock(nn.Module):
    """``Δh = f(h, emb)`` on the bottleneck: (B, C, H, W), (B, E) → (B, C, H, W); float32 parameters."""

    def __init__(self, channels: int, temb_channels: int, groups: int = 32, zero_init: bool = True) -> None:
        super().__init__()
        if channels % groups:
            raise UserError(
                f"Asyrp's h-space module: {channels} bottleneck channels are not divisible by {groups} groups"
            )
        self.norm_in = nn.GroupNorm(groups, channels)
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.temb = nn.Linear(temb_channels, channels)
        self.norm_out = nn.GroupNorm(groups, channels)
        self.conv_out = nn.Conv2d(channels, channels, 1)
        if zero_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        x = self.conv_in(F.silu(self.norm_in(h)))
        x = x + self.temb(F.silu(emb))[:, :, None, None]
        return self.conv_out(F.silu(self.norm_out(x)))


def bottleneck_shape(unet: nn.Module) -> tuple[int, int, int]:
    """(channels, time-embedding width, GroupNorm groups) of a diffusers ``UNet2DModel``'s bottleneck."""
    if getattr(unet, "mid_block", None) is None:
        raise UserError("Asyrp needs a U-Net with a middle block (its h-space); this prior's UNet2DModel has none")
    channels = int(unet.config.block_out_channels[-1])
    temb = int(unet.time_embedding.linear_2.out_features)
    return channels, temb, int(unet.config.norm_num_groups)


def build_delta(unet: nn.Module, zero_init: bool = True) -> DeltaBlock:
    channels, temb, groups = bottleneck_shape(unet)
    return DeltaBlock(channels, temb, groups=groups, zero_init=zero_init)


class HSpaceShift:
    """Adds ``scale · Δh(h, emb)`` to the output of ``unet.mid_block`` while :meth:`active` is entered.

    The block runs in float32 whatever the U-Net's dtype. With Δh = 0 the hooked call returns exactly the base
    model's output (``h + 0 = h``). The original and the shifted ε are two separate calls rather than one call on a
    doubled batch: a batch of 2B is not bit-identical to a batch of B, and at t ≈ T that difference is amplified
    by 1/√ᾱ_t in P_t.
    """

    def __init__(self, unet: nn.Module, delta: DeltaBlock) -> None:
        self.unet, self.delta = unet, delta
        bottleneck_shape(unet)

    @contextlib.contextmanager
    def active(self, scale: float = 1.0) -> Iterator[None]:
        def hook(module, args, kwargs, output):
            emb = args[1] if len(args) > 1 else kwargs.get("temb")
            if emb is None:
                raise RuntimeError("unet.mid_block was called without a time embedding")
            return output + (scale * self.delta(output.float(), emb.float())).to(output.dtype)

        handle = self.unet.mid_block.register_forward_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
