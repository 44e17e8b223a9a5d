"""Rosinality StyleGAN2 checkpoints: strict loading, export, and the Hydra entry point :func:`build_generator`.

The public W+ encoders (e4e, pSp, ReStyle) and StyleCLIP/SDD all ship or expect rosinality-converted ``.pt`` files
(``{"g_ema": state_dict, "latent_avg": (512,)}``); rosinality's ``train.py`` checkpoints (``g``, ``d``, ``g_ema``,
optimiser states, an ``argparse.Namespace``) and bare generator state_dicts (``.pt`` or ``.safetensors``) load too.
Files are read with :func:`diffedit_lab.utils.io.load_weights` (tensors and plain containers only, never code).
Randomly initialised generators: :func:`~diffedit_lab.models.stylegan2.generator.random_generator` (the
``random_weights`` switch, benchmarks) and the tiny one of :mod:`diffedit_lab.testing.stylegan2`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from diffedit_lab.models.stylegan2.generator import StyleGAN2Generator, random_generator
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_torch_save, load_weights


def read_checkpoint(path: str | os.PathLike) -> Mapping[str, Any]:
    """The checkpoint file as a dict, loaded safely; one-line :class:`UserError` for anything else."""
    # rosinality's train.py pickles its argparse.Namespace under "args"; allow that one harmless class.
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = load_weights(path, what="StyleGAN2 generator checkpoint")
    if not isinstance(ckpt, Mapping):
        raise UserError(f"StyleGAN2 checkpoint '{path}' holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def select_state(
    ckpt: Mapping[str, Any], key: str, path: str | os.PathLike
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """(generator state_dict, latent_avg or None): the sub-dict ``key`` or a bare generator state_dict."""
    latent_avg = ckpt.get("latent_avg")
    if key in ckpt and isinstance(ckpt[key], Mapping):
        return dict(ckpt[key]), latent_avg
    if "style.1.weight" in ckpt:  # a bare generator state_dict (maybe with latent_avg beside it)
        return {k: v for k, v in ckpt.items() if k != "latent_avg"}, latent_avg
    raise UserError(
        f"StyleGAN2 checkpoint '{path}' has no '{key}' entry and is not a generator state_dict "
        f"(top-level keys: {list(ckpt)[:6]}); provide a rosinality checkpoint or set the generator key"
    )


def load_rosinality_state(
    generator: StyleGAN2Generator, state: Mapping[str, torch.Tensor], source: str = "state_dict"
) -> None:
    """Strict load with a one-line error; the fixed blur/upsample filters may be absent (they are rebuilt)."""
    own = generator.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(".kernel")]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        found = (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
        parts = [f"{name} {items[:3]}{'...' if len(items) > 3 else ''}" for name, items in found if items]
        raise UserError(
            f"StyleGAN2 checkpoint '{source}' does not match a size={generator.size}, "
            f"style_dim={generator.style_dim}, n_mlp={len(generator.style) - 1} generator: "
            + "; ".join(parts)
            + " (set generator size/style_dim/n_mlp/channel_multiplier to the checkpoint's)"
        )
    generator.load_state_dict({**own, **state}, strict=True)


def load_generator(
    path: str | os.PathLike,
    size: int,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    key: str = "g_ema",
    **kwargs: Any,
) -> StyleGAN2Generator:
    """Build the architecture (``kwargs``: ``channels``, ``crop``, ``lr_mlp``, ``blur_kernel``) and load a
    rosinality checkpoint into it strictly; its ``latent_avg``, when present, becomes ``generator.latent_avg``."""
    ckpt = read_checkpoint(path)
    state, latent_avg = select_state(ckpt, key, path)
    gen = StyleGAN2Generator(size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier, **kwargs)
    load_rosinality_state(gen, state, source=str(path))
    if latent_avg is not None:
        if latent_avg.numel() != style_dim:
            raise UserError(
                f"StyleGAN2 checkpoint '{path}': latent_avg has {latent_avg.numel()} values, expected "
                f"style_dim={style_dim}"
            )
        gen.latent_avg = latent_avg.detach().float().reshape(1, style_dim)
    return gen


def save_rosinality_checkpoint(generator: StyleGAN2Generator, path: str | os.PathLike) -> None:
    """Write ``{"g_ema": state_dict, "latent_avg": (style_dim,)}`` -- the layout of rosinality's
    ``convert_weight.py`` -- atomically. Used by tests and to export a generator for other tools."""
    latent_avg = generator.latent_avg if generator.latent_avg is not None else generator.mean_latent()
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    atomic_torch_save({"g_ema": state, "latent_avg": latent_avg.detach().cpu().reshape(-1).clone()}, path)


def build_generator(
    checkpoint: str | os.PathLike | None,
    size: int,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    crop: Sequence[int] | None = None,
    key: str = "g_ema",
    channels: Mapping[int, int] | None = None,
    device: torch.device | str | None = None,
    random_weights: bool = False,
) -> StyleGAN2Generator:
    """Hydra entry point (``_target_: diffedit_lab.models.stylegan2.build_generator``): a pretrained generator in
    eval mode, from a rosinality ``.pt`` (or a bare state_dict file).

    ``channels`` overrides the channel table given by ``channel_multiplier`` (resolution → channels); a given
    ``device`` receives the generator. A random generator is only built on request: ``random_weights=True`` (the
    real-shape switch, :mod:`diffedit_lab.models.real_shapes`) builds this config's architecture with seeded
    random weights, logs one WARNING line and never reads ``checkpoint``; the tiny one of tests and the demo is
    :func:`diffedit_lab.testing.stylegan2.tiny_generator`.
    """
    from diffedit_lab.models import real_shapes

    if real_shapes.check_flag(random_weights, "generator.random_weights"):
        name = f"StyleGAN2 generator {os.path.basename(str(checkpoint))}" if checkpoint else "StyleGAN2 generator"
        real_shapes.announce(f"{name} ({size} px, style_dim {style_dim}, n_mlp {n_mlp})")
        return random_generator(
            size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channel_multiplier=channel_multiplier,
            channels=channels,
            crop=crop,
            seed=real_shapes.RANDOM_WEIGHTS_SEED,
            device=device,
        )
    if checkpoint is None or not str(checkpoint).strip():
        raise UserError(
            "generator.checkpoint is not set: give the path of a rosinality StyleGAN2 checkpoint "
            "(e.g. stylegan2-ffhq-config-f.pt), or use generator=tiny for a random test generator"
        )
    gen = load_generator(
        checkpoint,
        size,
        style_dim=style_dim,
        n_mlp=n_mlp,
        channel_multiplier=channel_multiplier,
        key=key,
        channels=channels,
        crop=crop,
    ).eval()
    return gen if device is None else gen.to(device)
