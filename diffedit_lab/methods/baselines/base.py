"""What the text-guided baselines share: test images in, edited images out, through Lightning's predict loop.

A baseline implements ``edit_images(images) -> edited`` on a batch in [-1, 1]; this module gives it the ``edit``
stage (PNGs ``edit/input|edited/<name>.png``, ``grid.png``, latency per image) and the ``eval`` stage
(directional CLIP, identity, LPIPS to the source, FID/KID of the edits against the sources; or any folder pair).
Inputs are the test split of the image datamodule (``data=celebahq``, ``data=samples``, a folder via ``data.root``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from diffedit_lab.callbacks.metrics import MetricsCallback
from diffedit_lab.callbacks.predictions import ImageWriter
from diffedit_lab.data.base import split_loader
from diffedit_lab.methods.base import EditingMethod
from diffedit_lab.methods.stage import Stage, StageContext
from diffedit_lab.utils.timing import Stopwatch

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

    def _loader(self, ctx: StageContext, limit: int | None, batch_size: int) -> DataLoader:
        return split_loader(ctx.datamodule, "test", limit, batch_size, f"method={self.cfg.name}, which edits images,")

    def _step(self, with_metrics: bool):
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)  # one stream over the whole split
        self.teacher  # noqa: B018 - built (and moved) before the first timed batch: latency is the edit alone

        @torch.no_grad()
        def step(batch: dict, batch_idx: int) -> dict:
            with Stopwatch(self.device) as sw:
                out = self.edit_batch(batch, gen)
            images, edited = out["input"], out["edited"]
            latency = sw.ms / 1000 / len(images)
            names = [Path(str(p)).stem for p in batch["path"]]
            scalars = {"latency_ms_per_image": torch.full((len(images),), 1000 * latency)}
            if with_metrics:
                metrics = {"edit": (images, edited), "paired": (edited, images), "fake": edited, "real": images}
                return {"metrics": {**metrics, "scalars": scalars}}
            return {"names": names, "images": {"input": images, "edited": edited}, "metrics": {"scalars": scalars}}

        return step

    # --- stages -----------------------------------------------------------------------------------------------
    def stage_edit(self, ctx: StageContext) -> dict[str, float] | None:
        from diffedit_lab.evaluation.suite import MetricSuite

        e = self.cfg.edit
        writer = ImageWriter(ctx.run_dir / "edit", grid_keys=("input", "edited"), grid_columns=e.grid_columns,
                             grid_max=e.grid_max, log_key="edit/before_after")  # fmt: skip
        timing = MetricsCallback(lambda: MetricSuite([]), prefix="edit")
        loader = self._loader(ctx, e.max_images, e.batch_size)
        self.run_predict(ctx, loader, self._step(with_metrics=False), callbacks=[writer, timing])
        metrics = {**timing.result, "edit/num_images": float(writer.count)}
        log.info(
            "%s edited %d images: %.1f ms/image", self.cfg.name, writer.count, metrics["edit/latency_ms_per_image"]
        )
        ctx.write_metrics(metrics)

    def stage_eval(self, ctx: StageContext) -> dict[str, float] | None:

        e = self.cfg.eval
        if e.folder.pred:
            return self.evaluate_folder(ctx, e.folder)
        loader = self._loader(ctx, e.max_images, e.batch_size)
        scorer = MetricsCallback(self.metric_suite(e.metrics, e, len(loader.dataset)), prefix="eval")
        self.run_predict(ctx, loader, self._step(with_metrics=True), callbacks=[scorer])
        metrics = {**scorer.result, "eval/num_images": float(len(loader.dataset))}
        log.info("%s eval: %s", self.cfg.name, {k: round(v, 5) for k, v in metrics.items()})
        ctx.write_metrics(metrics)
