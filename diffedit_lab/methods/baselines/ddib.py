"""DDIB-style text editing (Su et al., ICLR 2023) on Stable Diffusion: the deterministic DDIM ODE is run forward
with the SOURCE text (image → latent noise x_T) and backward with the TARGET text (x_T → edited image), so what
the two texts share is kept and what differs is changed. No noise is drawn: the edit is a deterministic map."""

from __future__ import annotations

import torch

from diffedit_lab.diffusion.samplers import ddim_invert, ddim_sample
from diffedit_lab.methods.baselines.base import ImageEditBaseline
from diffedit_lab.methods.baselines.config import DDIBConfig


class DDIBMethod(ImageEditBaseline):
    Config = DDIBConfig

    def encode(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        prior = self.teacher
        if self.cfg.latent == "mean" and hasattr(prior, "vae"):
            latents = prior.vae.encode(images.to(prior.dtype)).latent_dist.mean
            return (latents * prior.scaling_factor).float()
        return prior.to_model_space(images, generator=generator)

    def edit_images(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        prior, c, b = self.teacher, self.cfg, images.shape[0]
        uncond = self.text_embeddings("", b)
        source = {"cond": self.text_embeddings(c.prompt.source_text, b), "uncond": uncond,
                  "guidance_scale": c.inversion_guidance}  # fmt: skip
        target = {"cond": self.text_embeddings(c.prompt.text, b), "uncond": uncond, "guidance_scale": c.guidance_scale}
        x_T = ddim_invert(prior, self.encode(images, generator), num_steps=c.num_steps, cond=source)
        z = ddim_sample(prior, x_T, num_steps=c.num_steps, cond=target, clip_sample=False)
        return prior.to_image_space(z)
