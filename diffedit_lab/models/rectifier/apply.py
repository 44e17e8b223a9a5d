"""Running one shared, frozen U-Net with per-sample convolution kernels — two interchangeable strategies.

* ``grouped``: while the call runs, each modulated ``nn.Conv2d`` computes a grouped convolution of the batch
  folded into channels: input (1, B·C_in, H, W), kernels (B·C_out, C_in, kh, kw), ``groups = B·groups``; sample b
  meets only its own kernel. One convolution per layer whatever B; the module's forward is restored afterwards
  (also on error). Default: measured faster than ``vmap`` (``experiments/bench/rectifier.py``).
* ``vmap``: ``torch.func.vmap`` over ``functional_call`` with the batched kernels
  (:meth:`UnconditionalPrior.forward_raw` with ``batched=True``) — the functional route; operators without a
  batching rule (e.g. CPU flash attention) fall back to a per-sample loop inside vmap.

Neither copies the U-Net or writes into its parameters; gradients reach the kernels (hence the Rectifier), the
U-Net's own frozen parameters get none.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

STRATEGIES = ("grouped", "vmap")


def _grouped_conv(module: nn.Conv2d, kernels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b = kernels.shape[0]
    if x.shape[0] != b:
        raise ValueError(f"{b} per-sample kernels for a batch of {x.shape[0]}")
    c_out = kernels.shape[1]
    weight = kernels.reshape(b * c_out, *kernels.shape[2:])
    bias = module.bias.repeat(b) if module.bias is not None else None
    out = F.conv2d(
        x.reshape(1, b * x.shape[1], *x.shape[2:]),
        weight,
        bias,
        module.stride,
        module.padding,
        module.dilation,
        module.groups * b,
    )
    return out.view(b, c_out, *out.shape[2:])


@contextlib.contextmanager
def grouped_kernels(unet: nn.Module, kernels: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Within the block, the convolutions named in ``kernels`` (module name → (B, C_out, C_in, kh, kw)) run with
    their per-sample kernels as one grouped convolution."""
    modules = dict(unet.named_modules())
    patched: list[nn.Module] = []
    try:
        for name, k in kernels.items():
            module = modules[name]
            if "forward" in module.__dict__:
                raise RuntimeError(f"{name} is already modulated (nested grouped_kernels)")
            module.forward = functools.partial(_grouped_conv, module, k)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def modulated_eps(
    prior, x_t: torch.Tensor, t: torch.Tensor, weights: Mapping[str, torch.Tensor], strategy: str = "grouped"
) -> torch.Tensor:
    """ε̂ of ``prior`` (an :class:`UnconditionalPrior`) at (x_t, t) with the per-sample kernels ``weights``
    (``<layer>.weight`` → (B, C_out, C_in, kh, kw), e.g. from :func:`.network.modulate`)."""
    if strategy == "vmap":
        return prior.predict_eps(x_t, t, params=weights, batched=True)
    if strategy == "grouped":
        kernels = {name.removesuffix(".weight"): w.to(prior.dtype) for name, w in weights.items()}
        with grouped_kernels(prior.unet, kernels):
            return prior.predict_eps(x_t, t)
    raise ValueError(f"unknown modulation strategy {strategy!r}; choose from {list(STRATEGIES)}")
