"""Logger factories and sending image files to the loggers that take images."""

from __future__ import annotations

import os
from typing import Any


def wandb_logger(**kwargs: Any):
    """A Lightning ``WandbLogger`` that goes offline by itself when no API key is configured.

    ``WANDB_MODE`` (online / offline / disabled) always wins. Without it, we run online only if ``WANDB_API_KEY``
    is set or ``~/.netrc`` has an api.wandb.ai entry (what ``wandb login`` writes); otherwise offline, so a run on
    a compute node without credentials still logs everything locally (``wandb sync`` later).
    """
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        netrc = os.path.expanduser("~/.netrc")
        logged_in = bool(os.environ.get("WANDB_API_KEY")) or (
            os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()
        )
        kwargs.setdefault("offline", not logged_in)
    elif mode in ("offline", "dryrun"):
        kwargs.setdefault("offline", True)
    os.makedirs(kwargs.get("save_dir") or ".", exist_ok=True)
    return WandbLogger(**kwargs)


def log_image_file(loggers, key: str, path, step: int = 0) -> None:
    """Send a PNG to W&B (``log_image``) and TensorBoard (``add_image``); other loggers keep the file only."""
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)], step=step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):
            import numpy as np
            from PIL import Image

            logger.experiment.add_image(key, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")
