"""Score distillation (DreamFusion's SDS, as used by SDD): a frozen text-conditional prior as a loss.

For images x produced by some differentiable model, encode z = E(x), noise it at t, and take
``g = w(t) · (ε̂_cfg(z_t, t, y) − ε)`` as the gradient of the loss w.r.t. z (the UNet Jacobian is skipped).
The gradient is injected with the "target" trick ``L = ½‖z − (z − g).detach()‖²`` (summed, not divided by the
batch size), whose derivative w.r.t. z is exactly g, so autograd carries it through the VAE encoder to the image
and on to whatever produced the image (e.g. SDD's latent mapper).

Top-k sparsification (SDD's ``clip_grad_topk``) has two scopes. Training keeps the k largest magnitudes over the
WHOLE batch, as the reference's training loop does (it flattens the batch's gradient). SDD's timestep search scores
one image at a time, so there the k are kept in EACH sample (``per_sample_topk=True``): a sample's gradient then
does not depend on the other images of its batch. ``generator`` may be one ``torch.Generator`` for the batch or a
list with one per sample (the VAE posterior sample and the noise ε of sample i then come from generator i only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffedit_lab.diffusion import schedule
from diffedit_lab.utils.errors import UserError


@dataclass
class SDSResult:
    loss: torch.Tensor  # scalar whose gradient w.r.t. the latent is ``grad``
    grad: torch.Tensor  # (B, C, h, w) latent-space gradient, detached
    t: torch.Tensor  # (B,) timesteps used
    latents: torch.Tensor  # z = E(x), still attached to the graph
    noise_mse: torch.Tensor  # ‖ε̂ − ε‖² mean, for logging


def topk_sparsify(grad: torch.Tensor, k: int | None, per_sample: bool = False) -> torch.Tensor:
    """Keep the k entries of largest magnitude, zero the rest (SDD's ``clip_grad_topk``).

    ``per_sample=False``: k over the WHOLE batch (SDD training). ``per_sample=True``: k in each sample, i.e. over
    the flattened dims after the first (SDD's one-image-at-a-time timestep search). ``k`` None, <= 0 or at least
    the number of entries in scope: no sparsification.
    """
    if k is None or k <= 0:
        return grad
    flat = grad.flatten(1) if per_sample else grad.flatten()
    if k >= flat.shape[-1]:
        return grad
    keep = flat.abs().topk(k, dim=-1).indices
    out = torch.zeros_like(flat).scatter_(-1, keep, flat.gather(-1, keep))
    return out.view_as(grad)


def _randn_like(x: torch.Tensor, generator) -> torch.Tensor:
    """N(0, I) shaped like ``x``: from one generator, or from a list with one generator per sample (each draws on
    its own device, so CPU generators give the same numbers whatever device ``x`` is on)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
        return torch.cat(
            [torch.randn((1, *x.shape[1:]), generator=g, device=g.device, dtype=x.dtype) for g in generator]
        ).to(x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def inject_gradient(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A scalar loss whose gradient w.r.t. ``latents`` equals ``grad``: ½‖z − (z − g).detach()‖² (sum)."""
    target = (latents - grad).detach()
    return 0.5 * ((latents - target) ** 2).sum()


class ScoreDistillation(torch.nn.Module):
    """SDS gradient from a :class:`~diffedit_lab.diffusion.priors.StableDiffusionPrior` (or any prior whose
    ``predict_eps`` takes ``cond``/``uncond``/``guidance_scale``)."""

    def __init__(
        self,
        prior,
        guidance_scale: float = 100.0,
        weighting: str = "one_minus_alpha",
        topk: int | None = None,
        noise: str = "random",
    ):
        super().__init__()
        self.prior = prior
        self.guidance_scale = float(guidance_scale)
        if weighting not in schedule.WEIGHTINGS:
            raise UserError(f"unknown SDS weighting '{weighting}'; choose one of {sorted(schedule.WEIGHTINGS)}")
        if noise not in ("random", "zero"):
            raise UserError(f"SDS noise must be 'random' or 'zero', got {noise!r}")
        self.weighting = weighting
        self.topk = topk
        self.noise = noise

    def gradient(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        prompt: str,
        negative_prompt: str = "",
        eps: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        per_sample_topk: bool = False,
    ) -> torch.Tensor:
        """The (top-k sparsified) latent gradient ``w(t)·(ε̂_cfg − ε)``; no graph."""
        return self._gradient(latents, t, prompt, negative_prompt, eps, generator, per_sample_topk)[0]

    def _gradient(
        self, latents, t, prompt, negative_prompt, eps, generator, per_sample_topk=False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient, ‖ε̂ − ε‖² mean)."""
        batch = latents.shape[0]
        if eps is None:
            eps = torch.zeros_like(latents) if self.noise == "zero" else _randn_like(latents, generator)
        with torch.no_grad():
            z_t = self.prior.add_noise(latents.detach(), eps, t)
            cond = self.prior.encode_text([prompt] * batch)
            uncond = self.prior.encode_text([negative_prompt] * batch)
            eps_hat = self.prior.predict_eps(z_t, t, cond=cond, uncond=uncond, guidance_scale=self.guidance_scale)
            w = schedule.loss_weight(self.weighting, self.prior.alphas_cumprod, t)
            grad = schedule.expand_like(w, latents) * (eps_hat - eps)
            grad = torch.nan_to_num(grad)
        return topk_sparsify(grad, self.topk, per_sample=per_sample_topk), ((eps_hat - eps) ** 2).mean()

    def forward(
        self,
        images: torch.Tensor,
        t: torch.Tensor | int,
        prompt: str,
        negative_prompt: str = "",
        eps: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        per_sample_topk: bool = False,
    ) -> SDSResult:
        """Encode ``images`` ([-1, 1]) and return the SDS loss attached to the graph of ``images``."""
        latents = self.prior.to_model_space(images, generator=generator)
        t = torch.as_tensor(t, device=latents.device).long()
        t = t.expand(latents.shape[0]) if t.ndim == 0 else t
        grad, noise_mse = self._gradient(latents, t, prompt, negative_prompt, eps, generator, per_sample_topk)
        return SDSResult(loss=inject_gradient(latents, grad), grad=grad, t=t, latents=latents, noise_mse=noise_mse)

    def image_gradient(
        self,
        images: torch.Tensor,
        t: torch.Tensor | int,
        prompt: str,
        negative_prompt: str = "",
        eps: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        per_sample_topk: bool = False,
    ) -> torch.Tensor:
        """∂L_SDS/∂x at the image: the signal SDD's timestep selection scores (entropy, ℓ1, HQS)."""
        x = images.detach().requires_grad_(True)
        with torch.enable_grad():
            result = self.forward(
                x, t, prompt, negative_prompt, eps=eps, generator=generator, per_sample_topk=per_sample_topk
            )
            (grad_x,) = torch.autograd.grad(result.loss, x)
        return grad_x
