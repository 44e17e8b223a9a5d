"""Invert real photos into StyleGAN2 W+ codes by optimisation, for when no encoder inversions exist.

Follows the recipe of the StyleGAN2 paper's projector (as in rosinality's ``projector.py``): start from the
mean latent, Adam with a cosine learning-rate ramp, and Gaussian noise added to the code early on, scaled by
the spread of W, so the search does not lock into the first basin. Unlike the reference, the per-layer noise
maps stay fixed by default (the checkpoint's constant noise), because downstream editing renders the codes
with that same constant noise; ``optimize_noise=True`` also fits the noise maps, with the reference's
autocorrelation regulariser, and returns them in :class:`Projection`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from diffedit_lab.models.stylegan2 import StyleGAN2Generator
from diffedit_lab.utils.errors import UserError

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Projection:
    """Result of :func:`run_projection`: codes, the noise maps used to render them, and the loss trace."""

    w_plus: torch.Tensor
    noises: list[torch.Tensor] | None = None
    losses: list[float] = field(default_factory=list)


def lr_schedule(t: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """Learning-rate factor at progress ``t`` in [0, 1]: linear warm-up, cosine fall to 0 at the end."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / rampup)


def noise_autocorrelation(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared one-pixel autocorrelation of each noise map at every scale down to 8 px.

    Without it the optimiser hides image content in the noise maps (they are per-pixel free parameters).
    """
    loss = noises[0].new_zeros(())
    for noise in noises:
        size = noise.shape[2]
        while True:
            loss = loss + (noise * torch.roll(noise, 1, dims=3)).mean().pow(2)
            loss = loss + (noise * torch.roll(noise, 1, dims=2)).mean().pow(2)
            if size <= 8:
                break
            noise = noise.reshape(-1, 1, size // 2, 2, size // 2, 2).mean(dim=(3, 5))
            size //= 2
    return loss


def _initial_codes(
    generator: StyleGAN2Generator, batch: int, init: str | torch.Tensor, w_mean: torch.Tensor
) -> torch.Tensor:
    shape = (batch, generator.n_latent, generator.style_dim)
    if isinstance(init, torch.Tensor):
        try:
            return init.detach().to(w_mean).expand(shape).clone()
        except RuntimeError as exc:
            raise UserError(f"projector init codes of shape {tuple(init.shape)} do not broadcast to {shape}") from exc
    if init == "mean":
        return w_mean.reshape(1, 1, -1).expand(shape).clone()
    raise UserError(f"projector init must be 'mean' or a W+ tensor, got '{init}'")


def run_projection(
    generator: StyleGAN2Generator,
    images: torch.Tensor,
    steps: int = 500,
    lr: float = 0.1,
    n_mean_latent: int = 4096,
    perceptual: Perceptual | None = None,
    mse_weight: float = 1.0,
    init: str | torch.Tensor = "mean",
    latent_noise: float = 0.05,
    latent_noise_ramp: float = 0.75,
    optimize_noise: bool = False,
    noise_regularize: float = 1e5,
    seed: int = 0,
    progress: bool = True,
) -> Projection:
    """Optimise W+ codes so that ``generator(w)`` (cropped as configured, resized to the images) matches
    ``images`` (B, 3, H, W) in [-1, 1]. Loss: ``mse_weight * MSE + perceptual(x, y).mean()``.

    Deterministic for a given ``seed``: the mean latent, the code noise and any initial noise maps are all
    drawn from one ``torch.Generator``. The generator's parameters are not changed.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"projector expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if steps < 1:
        raise UserError(f"projector steps must be >= 1, got {steps}")
    device = images.device
    rng = torch.Generator(device=device).manual_seed(seed)
    was_training = generator.training
    grad_flags = [p.requires_grad for p in generator.parameters()]
    generator.eval().requires_grad_(False)
    try:
        with torch.no_grad():
            z = torch.randn(n_mean_latent, generator.style_dim, device=device, generator=rng)
            w_samples = generator.mapping(z)
            w_mean = w_samples.mean(0)
            w_std = ((w_samples - w_mean).pow(2).sum() / n_mean_latent).sqrt().item()

        w_plus = _initial_codes(generator, images.shape[0], init, w_mean).requires_grad_(True)
        params = [w_plus]
        noises = None
        if optimize_noise:
            noises = [
                torch.randn(getattr(generator.noises, f"noise_{i}").shape, device=device, generator=rng)
                .expand(images.shape[0], -1, -1, -1)
                .clone()
                .requires_grad_(True)
                for i in range(generator.num_layers)
            ]
            params += noises
        optimizer = torch.optim.Adam(params, lr=lr)
        target = images.detach()
        losses: list[float] = []
        iterator = range(steps)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="project", leave=False)
        for step in iterator:
            t = step / steps
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_schedule(t)
            strength = w_std * latent_noise * max(0.0, 1.0 - t / latent_noise_ramp) ** 2
            jitter = torch.randn(w_plus.shape, device=device, generator=rng) * strength
            fake = generator.synthesis(w_plus + jitter, noise=noises)
            if fake.shape[-2:] != target.shape[-2:]:
                fake = F.interpolate(fake, size=target.shape[-2:], mode="bilinear", antialias=True)
            loss = mse_weight * F.mse_loss(fake, target)
            if perceptual is not None:
                loss = loss + perceptual(fake, target).mean()
            if noises is not None:
                loss = loss + noise_regularize * noise_autocorrelation(noises)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if noises is not None:
                with torch.no_grad():  # keep each map N(0, 1) so its strength stays the layer's learned one
                    for n in noises:
                        n.sub_(n.mean(dim=(1, 2, 3), keepdim=True)).div_(n.std(dim=(1, 2, 3), keepdim=True))
            losses.append(loss.item())
            if progress:
                iterator.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        for p, flag in zip(generator.parameters(), grad_flags, strict=True):
            p.requires_grad_(flag)
        generator.train(was_training)
    return Projection(
        w_plus=w_plus.detach(), noises=None if noises is None else [n.detach() for n in noises], losses=losses
    )


def project(
    generator: StyleGAN2Generator,
    images: torch.Tensor,
    steps: int = 500,
    lr: float = 0.1,
    n_mean_latent: int = 4096,
    noise_regularize: float = 1e5,
    perceptual: Perceptual | None = None,
    mse_weight: float = 1.0,
    init: str | torch.Tensor = "mean",
    progress: bool = True,
    seed: int = 0,
    latent_noise: float = 0.05,
    optimize_noise: bool = False,
) -> torch.Tensor:
    """Real images (B, 3, H, W) in [-1, 1] -> W+ codes (B, n_latent, style_dim); see :func:`run_projection`.

    ``noise_regularize`` only matters with ``optimize_noise=True`` (the fitted noise maps are then dropped:
    use :func:`run_projection` to keep them).
    """
    return run_projection(
        generator,
        images,
        steps=steps,
        lr=lr,
        n_mean_latent=n_mean_latent,
        perceptual=perceptual,
        mse_weight=mse_weight,
        init=init,
        latent_noise=latent_noise,
        optimize_noise=optimize_noise,
        noise_regularize=noise_regularize,
        seed=seed,
        progress=progress,
    ).w_plus
