"""Pretrained diffusion priors behind one interface.

Two families serve all methods:

* :class:`UnconditionalPrior` (:mod:`.pixel`) — a diffusers ``UNet2DModel`` in pixel space
  (``google/ddpm-ema-celebahq-256``, ``google/ddpm-ema-church-256``, an ADM checkpoint converted with
  ``diffedit_lab.tools.convert_adm``). Learned-variance models (6 output channels) are split: ``predict_eps``
  returns the ε half only. ``predict_eps(..., params=...)`` substitutes U-Net parameters for one call.
* :class:`StableDiffusionPrior` (:mod:`.stable_diffusion`) — Stable Diffusion (v1.4 by default): text-conditional
  UNet in the VAE latent space, with classifier-free guidance.

Both expose ``alphas_cumprod``, ``num_train_timesteps``, ``predict_eps(x_t, t, ...)``, ``add_noise`` and
``x0_from_eps`` (:class:`DiffusionPrior`, :mod:`.base`); ``to_model_space`` / ``to_image_space`` map [-1, 1]
images to the space the UNet works in (identity for pixel priors, VAE encode/decode for SD). :func:`resolve_dtype`
is the one rule for precision names (``auto`` → fp16 on CUDA, fp32 elsewhere). Random weights from architecture
configs: :mod:`.random_init` (``from_pretrained(..., random_weights=True)`` builds the released architecture of
``source``, :mod:`diffedit_lab.models.real_shapes`); the miniatures of tests and the demo are
:mod:`diffedit_lab.testing.priors`.
"""

from diffedit_lab.diffusion.priors.base import DTYPE_NAMES, DiffusionPrior, cast, freeze, load_component, resolve_dtype
from diffedit_lab.diffusion.priors.pixel import UnconditionalPrior
from diffedit_lab.diffusion.priors.stable_diffusion import SD14, StableDiffusionPrior

__all__ = [
    "DTYPE_NAMES",
    "SD14",
    "DiffusionPrior",
    "StableDiffusionPrior",
    "UnconditionalPrior",
    "cast",
    "freeze",
    "load_component",
    "resolve_dtype",
]
