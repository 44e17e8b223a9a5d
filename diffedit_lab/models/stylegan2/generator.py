"""The StyleGAN2 generator (rosinality names): mapping network, synthesis from W+ codes, truncation.

Every module and parameter name matches rosinality's ``Generator``, so its ``state_dict()`` loads strictly (see
:mod:`diffedit_lab.models.stylegan2.checkpoint`). Non-square domains: rosinality's LSUN-car checkpoint renders
512x512 and the car fills the middle 384 rows, so pass ``crop=(64, 64, 0, 0)`` (top, bottom, left, right pixels
removed) to get the 384x512 image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from diffedit_lab.models.stylegan2.ops import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.rng import seeded

NoiseMode = str  # "const" | "random" | "none"


def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Feature channels per resolution of config-f (channel_multiplier=2) and config-e (=1)."""
    cm = channel_multiplier
    return {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * cm,
        128: 128 * cm,
        256: 64 * cm,
        512: 32 * cm,
        1024: 16 * cm,
    }


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator (rosinality names): mapping ``style``, synthesis from W+ codes.

    ``forward``/``synthesis`` take W+ codes ``(B, n_latent, style_dim)`` and return images ``(B, 3, H, W)``
    in roughly [-1, 1]. Freeze it with ``requires_grad_(False)``; gradients still flow to the codes.
    """

    latent_avg: torch.Tensor | None

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        lr_mlp: float = 0.01,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        channels: Mapping[int, int] | None = None,
        crop: Sequence[int] | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.channels_last = bool(channels_last)
        log_size = int(round(math.log2(size))) if size > 0 else 0
        if size < 4 or 2**log_size != size:
            raise UserError(f"StyleGAN2 size must be a power of two >= 4, got {size}")
        table = {int(k): int(v) for k, v in (channels or default_channels(channel_multiplier)).items()}
        missing = [2**i for i in range(2, log_size + 1) if 2**i not in table]
        if missing:
            raise UserError(f"StyleGAN2 channel table has no entry for resolutions {missing} (size {size})")
        self.size, self.style_dim, self.log_size = size, style_dim, log_size
        self.channels = table
        self.crop = self._check_crop(crop, size)

        mlp = [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)]
        self.style = nn.Sequential(PixelNorm(), *mlp)
        self.input = ConstantInput(table[4])
        self.conv1 = StyledConv(table[4], table[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(table[4], style_dim, upsample=False)

        self.num_layers = (log_size - 2) * 2 + 1
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept because rosinality's Generator has it
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))
        in_channel = table[4]
        for i in range(3, log_size + 1):
            out_channel = table[2**i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, True, blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel
        self.n_latent = log_size * 2 - 2
        # The W average shipped with converted checkpoints; not part of the rosinality state_dict.
        self.register_buffer("latent_avg", None, persistent=False)

    @staticmethod
    def _check_crop(crop: Sequence[int] | None, size: int) -> tuple[int, int, int, int] | None:
        if crop is None:
            return None
        crop = tuple(int(c) for c in crop)
        if len(crop) != 4 or min(crop) < 0 or crop[0] + crop[1] >= size or crop[2] + crop[3] >= size:
            raise UserError(f"generator crop must be 4 non-negative pixels (top, bottom, left, right), got {crop}")
        return crop  # type: ignore[return-value]

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the returned images, after the crop."""
        top, bottom, left, right = self.crop or (0, 0, 0, 0)
        return self.size - top - bottom, self.size - left - right

    # -------------------------------------------------------------------------------- latent spaces

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, style_dim) -> w (B, style_dim)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Average w over ``n`` random z, (1, style_dim): the centre of W for truncation and projection."""
        device = self.input.input.device
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        z = torch.randn(n, self.style_dim, device=device, generator=generator)
        return self.mapping(z).mean(0, keepdim=True)

    def sample_wplus(
        self,
        z: torch.Tensor | Sequence[int],
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Map z (B, style_dim) or a list of integer seeds to W+ codes (B, n_latent, style_dim).

        Truncation pulls w towards ``truncation_latent`` (default: the checkpoint's ``latent_avg``, else
        ``mean_latent()``): ``w' = w_avg + psi * (w - w_avg)``. Runs with autograd like any module: wrap it in
        ``torch.no_grad()`` (or freeze the generator) when the codes are data, not something to train through.
        """
        device = self.input.input.device
        if not isinstance(z, torch.Tensor):
            z = torch.stack(
                [torch.randn(self.style_dim, generator=torch.Generator().manual_seed(int(s))) for s in z]
            ).to(device)
        w = self.mapping(z)
        if truncation != 1.0:
            if truncation_latent is None:
                truncation_latent = self.latent_avg if self.latent_avg is not None else self.mean_latent()
            avg = truncation_latent.reshape(1, self.style_dim).to(w)
            w = avg + truncation * (w - avg)
        return w.unsqueeze(1).repeat(1, self.n_latent, 1)

    # ------------------------------------------------------------------------------------- synthesis

    def _noises(self, noise_mode: NoiseMode, noise: Sequence[torch.Tensor] | None) -> list[Any]:
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
            return list(noise)
        if noise_mode == "const":
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if noise_mode == "random":
            return [None] * self.num_layers
        if noise_mode == "none":
            return [0.0] * self.num_layers
        raise UserError(f"noise_mode must be 'const', 'random' or 'none', got '{noise_mode}'")

    def synthesis(
        self,
        w_plus: torch.Tensor,
        noise_mode: NoiseMode = "const",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """W+ codes (B, n_latent, style_dim) -- or w (B, style_dim), broadcast -- to images (B, 3, H, W).

        ``noise_mode="const"`` uses the checkpoint's fixed noise buffers (deterministic), ``"random"`` draws
        fresh noise, ``"none"`` disables it; an explicit ``noise`` list (one map per layer) overrides both.
        """
        if w_plus.ndim == 2:
            w_plus = w_plus.unsqueeze(1).expand(-1, self.n_latent, -1)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"expected W+ of shape (B, {self.n_latent}, {self.style_dim}), got {tuple(w_plus.shape)}")
        noises = self._noises(noise_mode, noise)
        x = self.input(w_plus.shape[0])
        if self.channels_last:  # every conv, FIR filter and add below keeps the format (faster kernels, CPU and GPU)
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.conv1(x, w_plus[:, 0], noise=noises[0])
        skip = self.to_rgb1(out, w_plus[:, 1])
        i = 1
        for conv_up, conv, n1, n2, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noises[1::2], noises[2::2], self.to_rgbs, strict=True
        ):
            out = conv_up(out, w_plus[:, i], noise=n1)
            out = conv(out, w_plus[:, i + 1], noise=n2)
            skip = to_rgb(out, w_plus[:, i + 2], skip)
            i += 2
        if self.crop is not None:
            top, bottom, left, right = self.crop
            skip = skip[:, :, top : self.size - bottom, left : self.size - right]
        return skip.contiguous()

    def forward(
        self,
        w_plus: torch.Tensor,
        noise_mode: NoiseMode = "const",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.synthesis(w_plus, noise_mode=noise_mode, noise=noise)

    # ------------------------------------------------------------------------------------------- IO

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        key: str = "g_ema",
        **kwargs: Any,
    ) -> StyleGAN2Generator:
        """Build the architecture and load a rosinality checkpoint strictly
        (:func:`~diffedit_lab.models.stylegan2.checkpoint.load_generator`)."""
        from diffedit_lab.models.stylegan2.checkpoint import load_generator

        return load_generator(
            path, size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier, key=key, **kwargs
        )


def random_generator(
    size: int,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    channels: Mapping[int, int] | None = None,
    crop: Sequence[int] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> StyleGAN2Generator:
    """A StyleGAN2 generator with random weights from ``seed`` (the global RNG is left alone), in eval mode;
    with a ``device`` it is initialised there. E.g. config-f 1024: ``random_generator(1024)``. Used by
    ``build_generator(random_weights=True)``, the benchmark and the tiny generator of tests."""
    with seeded(seed, device):
        gen = StyleGAN2Generator(
            size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier, channels=channels, crop=crop
        )
    return gen.eval()
