"""What every diffusion prior shares: the dtype rule, loading a diffusers component, and the schedule arithmetic.

:class:`DiffusionPrior` holds the training scheduler and ᾱ (always float32) and implements ``add_noise`` /
``x0_from_eps``; subclasses (:mod:`.pixel`, :mod:`.stable_diffusion`) add the network call ``predict_eps`` and the
image ↔ model-space maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffedit_lab.diffusion import schedule
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.weights import missing_weights

DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str | None = None) -> torch.dtype:
    """The one rule for precision names, for every prior and every method.

    ``auto`` (or ``None``) → float16 when the prior will run on a CUDA ``device``, float32 on any other device;
    with no ``device`` given, float16 exactly when CUDA is available. Frozen priors run in half precision only on
    a GPU (CPU half-precision kernels are slow or missing). ``fp32``/``float32``, ``fp16``/``float16``,
    ``bf16``/``bfloat16`` name themselves, a ``torch.dtype`` is returned as is; anything else is a
    :class:`UserError`.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        on_gpu = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        return torch.float16 if on_gpu else torch.float32
    if dtype not in DTYPE_NAMES:
        raise UserError(f"unknown dtype '{dtype}'; use auto, fp32, fp16 or bf16")
    return DTYPE_NAMES[dtype]


def load_component(cls, source: str, what: str, **kwargs):
    """``cls.from_pretrained(source, **kwargs)`` with a clear message when the weights are not available."""
    src = str(Path(source).expanduser()) if Path(source).expanduser().exists() else source
    if source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().exists():
        raise UserError(f"{what}: local path '{source}' does not exist (expected a diffusers model folder)")
    try:
        return cls.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(src).exists():
            raise UserError(f"{what}: '{src}' is not a valid diffusers/transformers folder: {exc}") from exc
        raise missing_weights(what, source, "see README 'Weights'") from exc


def cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast only when needed (diffusers warns on every ``.to(dtype)``)."""
    current = next(module.parameters()).dtype
    return module if current == dtype else module.to(dtype)


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


class DiffusionPrior(nn.Module):
    """Shared schedule arithmetic; subclasses provide the network call."""

    def __init__(self, scheduler: Any):
        super().__init__()
        self.scheduler = scheduler
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.clone().float(), persistent=False)

    def _apply(self, fn, recurse=True):
        # ᾱ must stay float32 whatever the module is cast to: in fp16/bf16 the first ᾱ_t round to 1 (SNR = ∞).
        out = super()._apply(fn, recurse)
        self._buffers["alphas_cumprod"] = self.scheduler.alphas_cumprod.to(self.alphas_cumprod.device, torch.float32)
        return out

    def _place(self, device: torch.device | str | None) -> None:
        """Move to ``device`` when one was given at construction (the dtype was already chosen for it)."""
        if device is not None:
            self.to(device)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return schedule.add_noise(x0, eps, self.alphas_cumprod, t)

    def x0_from_eps(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return schedule.x0_from_eps(x_t, eps, self.alphas_cumprod, t)

    def to_model_space(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images

    def to_image_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def _timesteps(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device).long()
        return t.expand(batch) if t.ndim == 0 else t
