"""StyleGAN2 generator in plain PyTorch that loads the rosinality (``stylegan2-pytorch``) checkpoint layout.

* :mod:`.ops` -- the layers (equalised LR, FIR filters, modulated conv, synthesis blocks);
* :mod:`.generator` -- :class:`StyleGAN2Generator` (mapping, synthesis from W+, truncation, mean latent);
* :mod:`.checkpoint` -- rosinality checkpoint IO and the Hydra entry point :func:`build_generator`.

Everything is re-exported here, so ``diffedit_lab.models.stylegan2.<name>`` keeps working.
"""

from diffedit_lab.models.stylegan2.checkpoint import (
    build_generator,
    load_generator,
    load_rosinality_state,
    read_checkpoint,
    save_rosinality_checkpoint,
    select_state,
)
from diffedit_lab.models.stylegan2.generator import NoiseMode, StyleGAN2Generator, default_channels, random_generator
from diffedit_lab.models.stylegan2.ops import (
    Blur,
    ConstantInput,
    EqualLinear,
    FusedLeakyReLU,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    StyledConv,
    ToRGB,
    Upsample,
    fused_leaky_relu,
    make_kernel,
    upfirdn2d,
)

__all__ = [
    "Blur",
    "ConstantInput",
    "EqualLinear",
    "FusedLeakyReLU",
    "ModulatedConv2d",
    "NoiseInjection",
    "NoiseMode",
    "PixelNorm",
    "StyleGAN2Generator",
    "StyledConv",
    "ToRGB",
    "Upsample",
    "build_generator",
    "default_channels",
    "fused_leaky_relu",
    "load_generator",
    "load_rosinality_state",
    "make_kernel",
    "random_generator",
    "read_checkpoint",
    "save_rosinality_checkpoint",
    "select_state",
    "upfirdn2d",
]
