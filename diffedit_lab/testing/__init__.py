"""Every miniature model the tests, the demo and the benchmark build (diffusers' ``get_dummy_components()``
habit): random weights, the production classes and code paths, milliseconds on a CPU, nothing downloaded.

=========================  ==========================================  ==========================
builder                    what                                        config
=========================  ==========================================  ==========================
``tiny_sd_prior``          Stable Diffusion, 32 px, 4×16×16 latents     ``prior=tiny_sd``
``tiny_unet_prior``        pixel ``UNet2DModel`` prior, 32 px           ``prior=tiny_unet``
``tiny_generator``         StyleGAN2, 32 px, style 32                   ``generator=tiny``
``tiny_clip``              open_clip guide, 32 px, width 32             ``clip=tiny``
``tiny_identity``          ArcFace IR-SE, 32-d embeddings               ``identity=tiny``
=========================  ==========================================  ==========================

Plus the generic ``random_sd_prior`` / ``random_unet_prior`` / ``random_generator`` (any shapes: the benchmark builds
the real models' shapes with them), ``tiny_clip_tokenizer``, ``tiny_clip_model``, ``TINY_CHANNELS``, ``IRSE_TINY``.
Every builder is seeded and leaves the global random state alone. Names are imported lazily from their submodules
(:mod:`.priors`, :mod:`.stylegan2`, :mod:`.clip`, :mod:`.identity`), so ``import diffedit_lab.testing`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "priors": (
        "SD_SCHEDULER",
        "random_sd_prior",
        "random_unet_prior",
        "tiny_clip_tokenizer",
        "tiny_sd_configs",
        "tiny_sd_prior",
        "tiny_unet_config",
        "tiny_unet_prior",
    ),
    "stylegan2": ("TINY_CHANNELS", "random_generator", "tiny_channels", "tiny_generator"),
    "clip": ("TINY_CLIP_CFG", "tiny_clip", "tiny_clip_model"),
    "identity": ("IRSE_TINY", "tiny_identity"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
