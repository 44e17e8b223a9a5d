"""A diffusion prior's architecture without its weights — for start-up checks (layer selections, image sizes,
timestep ranges) that must run before anything is built.

:func:`describe_prior` reads ``config.json`` + ``scheduler_config.json`` of a diffusers folder (or the Hugging Face
cache for a hub id), or builds a prior made in code (the tiny/random builders of :mod:`diffedit_lab.testing`) on
the ``meta`` device, which allocates no memory. None when the architecture cannot be known without downloading
(the loader then gives its own one-line error when the stage builds it). A ``from_pretrained`` node with
``random_weights: true`` is described by the released architecture of its source
(:mod:`diffedit_lab.models.real_shapes`), without reading anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_FROM_PRETRAINED = {  # loader -> (subfolder of the U-Net config, subfolder of the scheduler config)
    "UnconditionalPrior.from_pretrained": (None, None),
    "StableDiffusionPrior.from_pretrained": ("unet", "scheduler"),
}


@dataclass(frozen=True)
class PriorShape:
    unet_config: dict[str, Any]
    num_train_timesteps: int

    @property
    def sample_size(self) -> int:
        size = self.unet_config.get("sample_size")
        return int(size[0] if isinstance(size, list | tuple) else size)

    @property
    def in_channels(self) -> int:
        return int(self.unet_config.get("in_channels", 3))

    def meta_unet(self) -> torch.nn.Module:
        """The ``UNet2DModel`` on the meta device: module names and weight shapes, no memory, no weights."""
        from diffusers import UNet2DModel

        with torch.device("meta"):
            return UNet2DModel.from_config(self.unet_config)


def _read_json(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _from_files(source: str, unet_sub: str | None, sched_sub: str | None) -> PriorShape | None:
    local = Path(source).expanduser()

    def read(sub: str | None, name: str) -> dict | None:
        if local.is_dir():
            return _read_json(local / sub if sub else local, name)
        from diffedit_lab.utils.weights import hf_cached_file

        found = hf_cached_file(source, f"{sub}/{name}" if sub else name)
        return json.loads(Path(found).read_text()) if found else None

    unet = read(unet_sub, "config.json")
    if unet is None:
        return None
    sched = read(sched_sub, "scheduler_config.json") or {}
    return PriorShape(unet, int(sched.get("num_train_timesteps", 1000)))


def _released(loader: str, source: str) -> PriorShape:
    """The released architecture of ``source`` (``random_weights: true``: nothing is read, a source without a
    known architecture is the loader's :class:`UserError`, raised here at start-up)."""
    from diffedit_lab.models import real_shapes

    if loader.startswith("StableDiffusionPrior"):
        sd = real_shapes.sd_prior_shape(source)
        return PriorShape(dict(sd.unet), int(sd.scheduler.get("num_train_timesteps", 1000)))
    pixel = real_shapes.pixel_prior_shape(source)
    return PriorShape(dict(pixel.unet), int(pixel.scheduler.get("num_train_timesteps", 1000)))


def describe_prior(node: Any) -> PriorShape | None:
    """The architecture of the prior (pixel U-Net or Stable Diffusion) a config node builds (module docstring)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or "_target_" not in node:
        return None
    node = {k: v for k, v in node.items() if k != "domain"}
    target = str(node["_target_"])
    loader = next((k for k in _FROM_PRETRAINED if target.endswith(k)), None)
    if loader is not None and node.get("random_weights") is True:
        return _released(loader, str(node.get("source", "")))
    if loader is not None:
        unet_sub, sched_sub = _FROM_PRETRAINED[loader]
        try:
            return _from_files(str(node.get("source", "")), node.get("subfolder") or unet_sub, sched_sub)
        except (OSError, ValueError):
            return None  # unreadable config: the loader reports it when the stage builds the prior
    from diffedit_lab.diffusion.priors.base import DiffusionPrior
    from diffedit_lab.utils.instantiate import instantiate

    with torch.device("meta"):
        prior = instantiate(node)
    if not isinstance(prior, DiffusionPrior) or not hasattr(prior, "unet"):
        return None
    return PriorShape(dict(prior.unet.config), prior.num_train_timesteps)
