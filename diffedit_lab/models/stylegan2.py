"""StyleGAN2 generator in plain PyTorch that loads the rosinality (``stylegan2-pytorch``) checkpoint layout.

Why this layout: the public W+ encoders (e4e, pSp, ReStyle) and StyleCLIP/SDD all ship or expect
rosinality-converted ``.pt`` files (``{"g_ema": state_dict, "latent_avg": (512,)}``), so every module and
parameter name here matches rosinality's ``Generator`` and its ``state_dict()`` loads strictly.

Why no custom CUDA: the fused bias-activation and ``upfirdn2d`` kernels are only speed-ups; the plain-torch
versions below compute the same function (the reference's own CPU path) and run on any device.

Non-square domains: rosinality's LSUN-car checkpoint renders 512x512 and the car fills the middle 384 rows,
so pass ``crop=(64, 64, 0, 0)`` (top, bottom, left, right pixels removed) to get the 384x512 image.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_torch_save, load_weights

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


def tiny_channels() -> dict[int, int]:
    """A few channels per resolution: a 32-64 px generator that runs in milliseconds on CPU (tests, demo)."""
    return {4: 16, 8: 16, 16: 16, 32: 8, 64: 8, 128: 8, 256: 8, 512: 8, 1024: 8}


# ----------------------------------------------------------------------------------------------- ops


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A separable 1-D kernel becomes its outer product; normalised to sum 1 (a low-pass that keeps DC)."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative pads crop), FIR-filter, then keep every ``down``-th pixel.

    The same (pad0, pad1) is used on both axes, as in StyleGAN2. The filter is a true convolution (the
    kernel is flipped), applied depthwise so every channel is filtered independently.
    """
    b, c, h, w = x.shape
    if up > 1:  # (h, w) -> (h*up, w*up) with the samples at the top-left of each up x up cell
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down]


def fused_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2, scale: float = 2**0.5
) -> torch.Tensor:
    """Add a per-channel bias, leaky ReLU, and rescale by sqrt(2) to keep the activations' second moment."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    """Normalise z to the unit sphere (times sqrt(dim)) so its length carries no information."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalised learning rate: weights stored as N(0, 1/lr_mul²) and scaled by lr_mul/sqrt(in) at run time.

    Storing unscaled weights makes Adam's step size the same for every layer; ``lr_mul`` (0.01 in the
    mapping network) slows the mapping layers down relative to synthesis.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class Blur(nn.Module):
    """FIR low-pass after a strided transposed conv; gain up² so upsampling keeps the signal's level."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling of the RGB skip branch: zero insertion + the same FIR filter."""

    def __init__(self, kernel: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled by a style and whose outputs are demodulated to unit variance.

    Computed as ``conv(x * s, W) * d`` (one shared kernel for the batch), which equals convolving with the
    per-sample kernel ``W * s * d`` that StyleGAN2 describes, but needs no grouped convolution.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:  # pads chosen so that transposed conv (2h+1) then blur gives exactly 2h
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        s = self.modulation(style)  # (B, in)
        x = x * s.view(batch, self.in_channel, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            w = weight.unsqueeze(0) * s.view(batch, 1, self.in_channel, 1, 1)
            demod = torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + 1e-8)  # (B, out)
            out = out * demod.view(batch, self.out_channel, 1, 1)
        return out


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = image.new_empty(image.shape[0], 1, *image.shape[2:]).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ----------------------------------------------------------------------------------------- generator


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
    ) -> None:
        super().__init__()
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
        out = self.conv1(self.input(w_plus.shape[0]), w_plus[:, 0], noise=noises[0])
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
        return skip

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
        """Build the architecture and load a rosinality checkpoint strictly.

        Accepts a training/converted checkpoint ``{"g_ema": state_dict, "latent_avg": ..., ...}`` (the
        sub-dict named ``key``), or a bare generator state_dict (``.pt`` or ``.safetensors``).
        """
        ckpt = _load_checkpoint(path)
        state, latent_avg = _select_state(ckpt, key, path)
        gen = cls(size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier, **kwargs)
        gen.load_rosinality_state(state, source=str(path))
        if latent_avg is not None:
            if latent_avg.numel() != style_dim:
                raise UserError(
                    f"StyleGAN2 checkpoint '{path}': latent_avg has {latent_avg.numel()} values, expected "
                    f"style_dim={style_dim}"
                )
            gen.latent_avg = latent_avg.detach().float().reshape(1, style_dim)
        return gen

    def load_rosinality_state(self, state: Mapping[str, torch.Tensor], source: str = "state_dict") -> None:
        """Strict load with a one-line error; the fixed blur/upsample filters may be absent (rebuilt here)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state and not k.endswith(".kernel")]
        unexpected = [k for k in state if k not in own]
        wrong = [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ]
        if missing or unexpected or wrong:
            found = (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            parts = [f"{name} {items[:3]}{'...' if len(items) > 3 else ''}" for name, items in found if items]
            raise UserError(
                f"StyleGAN2 checkpoint '{source}' does not match a size={self.size}, "
                f"style_dim={self.style_dim}, n_mlp={len(self.style) - 1} generator: "
                + "; ".join(parts)
                + " (set generator size/style_dim/n_mlp/channel_multiplier to the checkpoint's)"
            )
        self.load_state_dict({**own, **state}, strict=True)


def _load_checkpoint(path: str | os.PathLike) -> Mapping[str, Any]:
    # rosinality's train.py pickles its argparse.Namespace under "args"; allow that one harmless class.
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = load_weights(path, what="StyleGAN2 generator checkpoint")
    if not isinstance(ckpt, Mapping):
        raise UserError(f"StyleGAN2 checkpoint '{path}' holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def _select_state(
    ckpt: Mapping[str, Any], key: str, path: str | os.PathLike
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    latent_avg = ckpt.get("latent_avg")
    if key in ckpt and isinstance(ckpt[key], Mapping):
        return dict(ckpt[key]), latent_avg
    if "style.1.weight" in ckpt:  # a bare generator state_dict (maybe with latent_avg beside it)
        return {k: v for k, v in ckpt.items() if k != "latent_avg"}, latent_avg
    raise UserError(
        f"StyleGAN2 checkpoint '{path}' has no '{key}' entry and is not a generator state_dict "
        f"(top-level keys: {list(ckpt)[:6]}); provide a rosinality checkpoint or set the generator key"
    )


def save_rosinality_checkpoint(generator: StyleGAN2Generator, path: str | os.PathLike) -> None:
    """Write ``{"g_ema": state_dict, "latent_avg": (style_dim,)}`` -- the layout of rosinality's
    ``convert_weight.py`` -- atomically. Used by tests and to export a generator for other tools."""
    latent_avg = generator.latent_avg if generator.latent_avg is not None else generator.mean_latent()
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    atomic_torch_save({"g_ema": state, "latent_avg": latent_avg.detach().cpu().reshape(-1).clone()}, path)


def build_generator(
    checkpoint: str | None,
    size: int,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    tiny: bool = False,
    seed: int = 0,
    crop: Sequence[int] | None = None,
    key: str = "g_ema",
) -> StyleGAN2Generator:
    """Hydra entry point (``_target_: diffedit_lab.models.stylegan2.build_generator``).

    Real runs need ``checkpoint`` (a rosinality ``.pt``). ``checkpoint=None`` builds a randomly initialised
    generator from ``seed`` -- only meaningful for tests and the offline demo. ``tiny`` swaps the channel
    table for a few channels per resolution (for both paths, so a saved tiny model loads back).
    """
    channels = tiny_channels() if tiny else None
    if checkpoint is not None:
        gen = StyleGAN2Generator.from_checkpoint(
            checkpoint,
            size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channel_multiplier=channel_multiplier,
            key=key,
            channels=channels,
            crop=crop,
        )
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = StyleGAN2Generator(
                size,
                style_dim=style_dim,
                n_mlp=n_mlp,
                channel_multiplier=channel_multiplier,
                channels=channels,
                crop=crop,
            )
    return gen.eval()
