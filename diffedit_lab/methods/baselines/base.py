"""What the text-guided baselines share: test images in, edited images out, through Lightning's predict loop.

A baseline implements ``edit_images(images) -> edited`` on a batch in [-1, 1]; this module gives it ``edit_batch``
and so the shared ``edit`` stage (PNGs ``edit/input|edited/<name>.png``, ``grid.png``, latency per image) and
``eval`` stage (directional CLIP, identity, LPIPS to the source, FID/KID of the edits against the sources; or any
folder pair) of :mod:`diffedit_lab.methods.editing`.
Inputs are the test split of the image datamodule (``data=celebahq``, ``data=samples``, a folder via ``data.root``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from diffedit_lab.methods.base import EditingMethod
from diffedit_lab.methods.stage import Stage

log = logging.getLogger(__name__)


class ImageEditBaseline(EditingMethod):
    STAGES = (Stage("edit", needs=("teacher",)), Stage("eval", needs=("teacher", "clip")))
    EDIT_STAGE = "edit"
    ANY_PROMPT = True  # a pipeline may edit toward any text (nothing was trained for one prompt)

    # --- components -------------------------------------------------------------------------------------------
    @property
    def teacher(self):
        return self.component("teacher", self.cfg.teacher)

    def text_embeddings(self, text: str, batch: int) -> torch.Tensor:
        return self.teacher.encode_text([text] * batch)

    # --- the edit ---------------------------------------------------------------------------------------------
    def edit_images(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → edited images of the same shape."""
        raise NotImplementedError

    @torch.no_grad()
    def edit_batch(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Images → ``input``/``edited`` (edited at ``resolution``, returned at the input's size)."""
        images = batch["image"].to(self.device).float()
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        return {"input": images, "edited": self._edit_at_resolution(images, generator)}

    def _edit_at_resolution(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        size = self.cfg.resolution or getattr(self.teacher, "image_size", None) or images.shape[-1]
        x = images
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out = self.edit_images(x, generator).clamp(-1, 1)
        if out.shape[-2:] != images.shape[-2:]:
            out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        return out

    # edit / eval: the shared passes (``methods.editing``) over ``edit_batch``, one seeded stream over the split
    def edit_generator(self) -> torch.Generator:
        self.teacher  # noqa: B018 - built (and moved) before the first timed batch: latency is the edit alone
        return torch.Generator(device=self.device).manual_seed(self.cfg.seed)
