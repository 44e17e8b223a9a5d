"""SDEdit (Meng et al., ICLR 2022) with Stable Diffusion and a text prompt: encode, noise to the point α of the
DDIM schedule, denoise with classifier-free guidance toward ``prompt.text``, decode. The SDD paper's Fig. 6
compares α from 0.1 to 0.9 (``-m method.strength=0.1,0.3,0.5,0.7,0.9``)."""

from __future__ import annotations

import torch

from diffedit_lab.diffusion.samplers import sdedit
from diffedit_lab.methods.baselines.base import ImageEditBaseline
from diffedit_lab.methods.baselines.config import SDEditConfig


class SDEditMethod(ImageEditBaseline):
    Config = SDEditConfig

    def edit_images(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        prior, c, b = self.teacher, self.cfg, images.shape[0]
        z0 = prior.to_model_space(images, generator=generator)
        cond = {"cond": self.text_embeddings(c.prompt.text, b), "uncond": self.text_embeddings("", b),
                "guidance_scale": c.guidance_scale}  # fmt: skip
        z = sdedit(prior, z0, strength=c.strength, num_steps=c.num_steps, eta=c.eta, generator=generator, cond=cond)
        return prior.to_image_space(z)
