"""The Rectifier hypernetwork R(x₀, P_t, t) → {layer: Δ}, and the modulation θ̂ = θ·(1 + Δ) (paper 003, Eq. 1–2).

Architecture (paper App. A, Fig. 9): a global encoder (:mod:`.encoder`) on concat(x₀, P_t) gives one feature map;
each modulated layer has its own subnet branch: a 3×3 conv, the sinusoidal time embedding added as in the U-Net's
ResNet blocks (an MLP of the sinusoid, projected per branch and added to every position), then stride-2 3×3
convolutions down to a 1×1 code. Two slim heads turn the code into ``a`` (kh×kw×C_in×1) and ``b`` (kh×kw×1×C_out);
their per-position outer product is the layer's offset Δ (kh×kw×C_in×C_out), so the heads generate
kh·kw·(C_in + C_out) numbers per layer instead of kh·kw·C_in·C_out (the separable trick of HyperStyle).

Δ = 0 exactly at initialisation: the ``b`` head is zero-initialised (weight and bias) and ``a`` keeps its default
init. Then ∂L/∂b = a·∂L/∂Δ ≠ 0, so the first step already moves ``b`` (zeroing both heads would leave every
gradient zero: Δ = a⊗b has ∂Δ/∂a = b and ∂Δ/∂b = a).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffedit_lab.models.rectifier.encoder import RESNET34, ResNetEncoder
from diffedit_lab.models.rectifier.layers import LayerSpec


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The U-Net's sinusoidal embedding of integer timesteps (diffusers' own function)."""
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)


class Subnet(nn.Module):
    """One layer's branch: encoder features (+ time) → 1×1 code → Δ of shape (B, C_out, C_in, kh, kw)."""

    def __init__(self, spec: LayerSpec, in_channels: int, channels: int, time_dim: int, feature_size: int) -> None:
        super().__init__()
        self.spec = spec
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, channels)
        n_down = math.ceil(math.log2(feature_size)) if feature_size > 1 else 0
        self.down = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(n_down))
        kh, kw = spec.kernel
        self.head_in = nn.Linear(channels, kh * kw * spec.in_channels)  # a: kh×kw×C_in×1
        self.head_out = nn.Linear(channels, kh * kw * spec.out_channels)  # b: kh×kw×1×C_out, zero at init
        nn.init.zeros_(self.head_out.weight)
        nn.init.zeros_(self.head_out.bias)

    def forward(self, features: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(features) + self.time_proj(F.silu(temb))[:, :, None, None]
        h = F.leaky_relu(h, 0.2)
        for conv in self.down:
            h = F.leaky_relu(conv(h), 0.2)
        code = h.mean(dim=(2, 3))  # already 1×1 after the strided convs; the mean makes it exact for any size
        kh, kw = self.spec.kernel
        a = self.head_in(code).view(-1, kh, kw, self.spec.in_channels)
        b = self.head_out(code).view(-1, kh, kw, self.spec.out_channels)
        return torch.einsum("byxi,byxo->boiyx", a, b)


class RectifierNet(nn.Module):
    """R(x₀, P_t, t): per-sample offsets for the kernels of ``layers`` (see the module docstring).

    ``image_size`` fixes the encoder's output size, hence each subnet's number of strided convolutions.
    ``pretrained``: a local torchvision ResNet-34 ImageNet state dict (else random init).
    """

    def __init__(
        self,
        layers: Sequence[LayerSpec],
        image_size: int,
        image_channels: int = 3,
        encoder_layers: Sequence[int] = RESNET34[0],
        encoder_widths: Sequence[int] = RESNET34[1],
        norm: str = "batch",
        subnet_channels: int = 256,
        time_dim: int = 128,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        self.layers = list(layers)
        self.time_dim = int(time_dim)
        self.encoder = ResNetEncoder(2 * image_channels, encoder_layers, encoder_widths, norm)
        if pretrained:
            self.encoder.load_imagenet(pretrained)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        size = ResNetEncoder.feature_size(int(image_size))
        width = self.encoder.out_channels
        self.subnets = nn.ModuleList(Subnet(s, width, subnet_channels, time_dim, size) for s in self.layers)

    @property
    def generated_per_sample(self) -> int:
        """Σ_ℓ kh·kw·(C_in + C_out): what the heads output for one sample."""
        return sum(s.generated for s in self.layers)

    def forward(self, x0: torch.Tensor, p_t: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """{layer name: Δ (B, C_out, C_in, kh, kw)} for images ``x0``, estimates ``p_t`` (both [-1, 1]) and ``t``."""
        features = self.encoder(torch.cat([x0, p_t], dim=1).float())
        t = torch.as_tensor(t, device=x0.device).long().expand(x0.shape[0])
        temb = self.time_mlp(timestep_embedding(t, self.time_dim).to(features.dtype))
        return {s.spec.name: s(features, temb) for s in self.subnets}


def _row_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` with plain row-major strides, copied only when its strides differ. ``is_contiguous`` ignores size-1
    axes, so an einsum-born (B, C_out, C_in, 1, 1) kernel can pass it with strides that read as channels-last and
    send the convolution down another kernel (same values, different rounding than the plain U-Net)."""
    expected, step = [], 1
    for n in reversed(x.shape):
        expected.append(step)
        step *= n
    if x.stride() == tuple(reversed(expected)):
        return x
    return x.clone(memory_format=torch.contiguous_format)


def modulate(weights: Mapping[str, torch.Tensor], deltas: MutableMapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """θ̂ = θ·(1 + Δ) per sample: ``weights`` maps a layer name to its kernel θ (C_out, C_in, kh, kw), ``deltas``
    to Δ (B, C_out, C_in, kh, kw); the result maps ``<layer>.weight`` to θ̂ (B, C_out, C_in, kh, kw) in float32.

    ``deltas`` is CONSUMED: each Δ is popped as soon as its θ̂ exists, so a caller passing ``net(...)`` straight
    in holds one set of per-sample kernels during the U-Net forward, not two (Δ is not kept for the backward:
    ∂θ̂/∂Δ = θ). θ̂ is computed in float32 whatever θ's dtype: in half precision 1 + Δ rounds away |Δ| < 2⁻¹¹
    (fp16) / 2⁻⁸ (bf16), exactly the offsets a zero-initialised Δ starts from (and a half θ̂ would still lose
    relative changes below 2⁻¹² / 2⁻⁹: why ``method.base_dtype`` is fp32 only)."""
    out = {}
    for name in list(deltas):
        hat = 1 + deltas.pop(name).float()  # a fresh tensor: the popped Δ is freed here (unless the caller kept it)
        hat.mul_(weights[name].float())
        out[f"{name}.weight"] = _row_major(hat)
    return out
