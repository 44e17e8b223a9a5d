"""Pixel-space unconditional prior: a diffusers ``UNet2DModel`` (DDPM CelebA-HQ/church, a converted ADM model).

Learned-variance models (6 output channels) are split: ``predict_eps`` returns the ε half only, ``forward_raw``
the whole output. Both take an optional ``params`` dict that substitutes U-Net parameters for one call
(``torch.func.functional_call``) — the entry point of weight-modulating methods such as the Rectifier; with
``batched=True`` every substituted tensor carries one version per sample (a leading batch axis) and the call is
vmapped over the batch, so per-sample weights never need a copy of the U-Net.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffedit_lab.diffusion.priors.base import DiffusionPrior, cast, freeze, load_component, resolve_dtype


class UnconditionalPrior(DiffusionPrior):
    """Pixel-space ``UNet2DModel`` prior; ε-prediction, optionally with learned variance.

    ``dtype`` follows :func:`resolve_dtype` for ``device`` (``auto``: fp16 on CUDA, fp32 elsewhere); a given
    ``device`` also receives the module. The U-Net is frozen unless ``trainable``.
    """

    def __init__(
        self,
        unet: nn.Module,
        scheduler: Any,
        dtype: str | torch.dtype | None = "fp32",
        channels_last: bool = False,
        gradient_checkpointing: bool = False,
        trainable: bool = False,
        device: torch.device | str | None = None,
    ):
        super().__init__(scheduler)
        self.unet = cast(unet, resolve_dtype(dtype, device))
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if not trainable:
            freeze(self.unet)
        self._place(device)

    @property
    def image_size(self) -> int:
        return int(self.unet.config.sample_size)

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def learned_variance(self) -> bool:
        return int(self.unet.config.out_channels) == 2 * self.in_channels

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def forward_raw(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        params: Mapping[str, torch.Tensor] | None = None,
        batched: bool = False,
    ) -> torch.Tensor:
        """The U-Net output as is (6 channels for learned-variance models), float32.

        ``params`` (name → tensor, names as in ``unet.named_parameters()`` / ``named_buffers()``) replace those
        tensors of the U-Net for this call only, through ``torch.func.functional_call``; the others stay the
        module's own. Gradients flow to the given tensors (the frozen U-Net's own parameters get none). Floating
        tensors are cast to the U-Net's dtype. Unknown names or wrong shapes are a ``KeyError`` / ``ValueError``
        (``functional_call`` would ignore an unknown name silently).

        ``batched=True``: each tensor of ``params`` is (B, *shape) and sample b runs with ``params[k][b]``
        (``torch.func.vmap`` over the batch; the U-Net itself is shared, not copied).
        """
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        dtype = self.dtype
        x = x_t.to(dtype)
        if params is None:
            return self.unet(x, t).sample.float()
        if not batched:
            return torch.func.functional_call(self.unet, self._check_params(params, dtype), (x, t)).sample.float()
        checked = self._check_params(params, dtype, batch=x.shape[0])

        def one(p: dict[str, torch.Tensor], xi: torch.Tensor, ti: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self.unet, p, (xi[None], ti[None])).sample[0]

        return torch.func.vmap(one)(checked, x, t).float()

    def predict_eps(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        params: Mapping[str, torch.Tensor] | None = None,
        batched: bool = False,
        **_: Any,
    ) -> torch.Tensor:
        """ε̂(x_t, t): the ε channels of :meth:`forward_raw` (same ``params``/``batched`` substitution); other
        keyword arguments (a conditional prior's ``cond`` …) are ignored."""
        out = self.forward_raw(x_t, t, params=params, batched=batched)
        return out[:, : self.in_channels] if self.learned_variance else out

    def _check_params(
        self, params: Mapping[str, torch.Tensor], dtype: torch.dtype, batch: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Names and shapes against the U-Net's own tensors (with a leading ``batch`` axis when given)."""
        own = dict(self.unet.named_parameters())
        own.update(self.unet.named_buffers())
        unknown = [k for k in params if k not in own]
        if unknown:
            raise KeyError(f"not U-Net parameters: {unknown[:3]}{'…' if len(unknown) > 3 else ''}")
        lead = () if batch is None else (int(batch),)
        expected = {k: torch.Size((*lead, *own[k].shape)) for k in params}
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k])}" for k, v in params.items() if v.shape != expected[k]]
        if wrong:
            raise ValueError(f"substituted U-Net parameters have the wrong shape: {wrong[:3]}")
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in params.items()}

    @classmethod
    def from_pretrained(
        cls,
        source: str,
        subfolder: str | None = None,
        dtype: str | torch.dtype | None = "auto",
        device: torch.device | str | None = None,
        random_weights: bool = False,
        **kwargs: Any,
    ) -> UnconditionalPrior:
        """Load a ``UNet2DModel`` (+ its ``DDPMScheduler``) from a hub id or a diffusers folder; ``dtype='auto'``
        is resolved for ``device`` (:func:`resolve_dtype`). Folders without a scheduler config get the standard
        linear DDPM schedule (T = 1000).

        ``random_weights=True``: the released architecture of ``source`` (:mod:`diffedit_lab.models.real_shapes`)
        with seeded random weights, one WARNING line, no file read; an unknown ``source`` is a :class:`UserError`.
        """
        from diffusers import DDPMScheduler, UNet2DModel

        from diffedit_lab.models import real_shapes

        if real_shapes.check_flag(random_weights, "prior.random_weights"):
            from diffedit_lab.diffusion.priors.random_init import random_unet_prior

            shape = real_shapes.pixel_prior_shape(source)
            real_shapes.announce(source)
            seed = real_shapes.RANDOM_WEIGHTS_SEED
            return random_unet_prior(shape.unet, shape.scheduler, seed=seed, dtype=dtype, device=device, **kwargs)
        unet = load_component(UNet2DModel, source, "diffusion prior UNet", subfolder=subfolder)
        try:
            scheduler = DDPMScheduler.from_pretrained(
                str(Path(source).expanduser()) if Path(source).expanduser().exists() else source,
                subfolder=subfolder,
            )
        except (OSError, ValueError):  # folders without scheduler_config.json: the standard linear DDPM schedule
            scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        return cls(unet, scheduler, dtype=dtype, device=device, **kwargs)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.unet.save_pretrained(path)
        self.scheduler.save_pretrained(path)
