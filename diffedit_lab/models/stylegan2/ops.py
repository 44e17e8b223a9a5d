"""StyleGAN2's layers in plain PyTorch, named as in rosinality's ``stylegan2-pytorch`` (so its state_dicts load).

Equalised learning rate (:class:`EqualLinear`, the modulated conv's stored weights), the FIR filters
(:func:`upfirdn2d`, :class:`Blur`, :class:`Upsample`), the bias + leaky ReLU + sqrt(2) activation, PixelNorm, the
modulated/demodulated convolution and the synthesis blocks built from it (:class:`StyledConv`, :class:`ToRGB`).

Why no custom CUDA: the fused bias-activation and ``upfirdn2d`` kernels of the reference are only speed-ups; the
plain-torch versions below compute the same function (the reference's own CPU path) and run on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Blur",
    "ConstantInput",
    "EqualLinear",
    "FusedLeakyReLU",
    "ModulatedConv2d",
    "NoiseInjection",
    "PixelNorm",
    "StyledConv",
    "ToRGB",
    "Upsample",
    "fused_leaky_relu",
    "make_kernel",
    "upfirdn2d",
]


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A separable 1-D kernel becomes its outer product; normalised to sum 1 (a low-pass that keeps DC)."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative pads crop), FIR-filter, then keep every ``down``-th pixel.

    The same (pad0, pad1) is used on both axes, as in StyleGAN2. The filter is a true convolution (the
    kernel is flipped), applied depthwise so every channel is filtered independently.

    Two cases StyleGAN2 uses run as ONE depthwise convolution without materialising the padded or zero-stuffed
    image: a symmetric pad (``up == 1``: ``conv2d`` with ``padding``) and zero insertion followed by a filter whose
    crop is symmetric (``up > 1``: a strided ``conv_transpose2d`` with the kernel itself, which computes exactly
    the non-zero taps). Everything else takes the literal route. ``bias`` (C,) is added to the output (inside the
    convolution on the fast paths: no extra pass over the image).
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    p0, p1 = pad
    if down == 1 and kh == kw:
        if up == 1 and p0 == p1 >= 0:
            weight = torch.flip(kernel, [0, 1]).to(x).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
            return F.conv2d(x, weight, bias, padding=p0, groups=c)
        crop0, crop1 = kh - 1 - p0, kh - up - p1  # what the full transposed conv has beyond the wanted output
        if up > 1 and crop0 == crop1 >= 0:
            weight = kernel.to(x).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
            return F.conv_transpose2d(x, weight, bias, stride=up, padding=crop0, groups=c)
    if up > 1:  # (h, w) -> (h*up, w*up) with the samples at the top-left of each up x up cell
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(x).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, bias, groups=c)
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

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad, bias=bias)


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

    For one image (an edit) it is ONE convolution with the per-sample kernel ``gain · W · s · d`` that StyleGAN2
    describes: the style, the demodulation, an output gain and a bias all ride on the kernel, so no pass over the
    activations is spent on them. ``gain`` and ``bias`` let the caller fold its own affine step in (``StyledConv``
    folds the activation's √2 and bias).
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

    def demodulation(self, s: torch.Tensor) -> torch.Tensor:
        """d[b, o] = 1/√(Σ_{i,k} (scale·W[o,i,k]·s[b,i])² + 1e-8) from Σ_k W² and s², without the (B, out, in, k, k)
        tensor: (B, out)."""
        w2 = self.weight[0].pow(2).sum(dim=(2, 3)) * self.scale**2  # (out, in)
        return torch.rsqrt(s.pow(2) @ w2.T + 1e-8)

    def sample_kernels(self, style: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """``gain · scale · W · s`` (demodulated), one kernel per sample: (B, out, in, k, k)."""
        s = self.modulation(style)  # (B, in)
        coef = (self.scale * gain) * s[:, None, :]  # (B, 1, in)
        if self.demodulate:
            coef = coef * self.demodulation(s)[:, :, None]  # (B, out, in)
        return self.weight * coef[..., None, None]

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, gain: float = 1.0, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``bias`` (out,) is added after the convolution (after the blur when upsampling). One image: the per-sample
        kernel. A batch: ``conv(x·s, W)·d`` with the kernel shared by the batch (the same function; keeps the memory
        format of ``x``, e.g. channels-last, which a grouped conv over a reshaped batch would not)."""
        batch = x.shape[0]
        if batch == 1:
            weight, scale_out = self.sample_kernels(style, gain)[0], None
        else:
            s = self.modulation(style)
            x = x * s.view(batch, self.in_channel, 1, 1)
            weight = self.scale * gain * self.weight[0]
            scale_out = self.demodulation(s) if self.demodulate else None
        bias_in_conv = bias if scale_out is None else None  # one image: the bias rides on the (blur's) convolution
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2), bias_in_conv)
        else:
            out = F.conv2d(x, weight, bias_in_conv, padding=self.padding)
        if scale_out is None:
            return out
        scale = scale_out.view(batch, self.out_channel, 1, 1)
        return out * scale if bias is None else torch.addcmul(bias.view(1, -1, 1, 1), out, scale)


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

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | float | None = None) -> torch.Tensor:
        """``lrelu(conv + noise·w_n + b)·√2`` computed as ``lrelu(conv_√2 + √2·noise·w_n)``: the gain and the bias
        ride on the kernel (leaky ReLU is positively homogeneous), leaving one add and one in-place activation."""
        gain = 2**0.5
        out = self.conv(x, style, gain=gain, bias=self.activate.bias * gain)
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        if not (isinstance(noise, float | int) and noise == 0):
            out = out.add_(noise * (self.noise.weight * gain))
        return F.leaky_relu_(out, 0.2)


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
        out = self.conv(x, style, bias=self.bias.view(-1))
        if skip is not None:
            out = out.add_(self.upsample(skip))
        return out
