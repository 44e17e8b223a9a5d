"""The Rectifier's inference stages, through Lightning's predict loop.

* ``reconstruct``: DDIM inversion of the test images and DDIM sampling back, ``steps`` each way, with the rectified
  model (conditioned on each image) and, on the same images, with the plain base model; L1/L2/LPIPS/SSIM/PSNR
  against the inputs and the noise-prediction error ``eps_mse`` (‖ε − ε̂(x_t, t)‖² on the test images at the
  schedule's timesteps, our reading of the paper's posterior-mean gap ‖Δe‖²) → one table
  (``reconstruct/table.csv``/``.md``), ``metrics.json``, PNGs and a grid;
* ``edit`` (after its training) / ``apply``: the shared edit pass (:mod:`diffedit_lab.methods.editing`) over
  ``edit_batch``: each test image is inverted (with the rectifier, or the plain model) and sampled through the
  whole trajectory with the editor → ``edit/source``, ``edit/edited``, ``grid.png``, and
  directional CLIP, identity, FID (edits vs sources), LPIPS to the source and ``edit/latency_ms_per_image`` (the
  inversion and the sampling of a batch over its size, as the baselines time their edits);
* ``eval``: any folder pair (``eval.folder.pred``/``ref``), by default this run's ``edit/edited`` vs ``edit/source``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from diffedit_lab.callbacks.metrics import MetricsCallback
from diffedit_lab.callbacks.predictions import ImageWriter
from diffedit_lab.data.base import split_loader
from diffedit_lab.diffusion import samplers
from diffedit_lab.methods.rectifier.config import EPS_MSE
from diffedit_lab.methods.stage import StageContext
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_write

log = logging.getLogger(__name__)


def ddim_timesteps(prior, steps: int) -> torch.Tensor:
    """The timesteps of the ``steps``-step DDIM schedule (what inversion and sampling visit), on the CPU."""
    return samplers._scheduler(prior, "ddim", steps).timesteps.cpu()


def test_loader(module, ctx: StageContext, limit: int | None, batch_size: int) -> DataLoader:
    return split_loader(ctx.datamodule, "test", limit, batch_size, "Rectifier reconstruct/edit")


def _names(batch: dict) -> list[str]:
    if "path" in batch:
        return [Path(p).stem for p in batch["path"]]
    return [f"{int(i):05d}" for i in batch["index"]]


class KeyedMetrics(MetricsCallback):
    """A :class:`MetricsCallback` fed from ``outputs[key]`` (several suites scored from one predict loop)."""

    def __init__(self, make_suite, prefix: str, key: str, feed_real=None) -> None:
        super().__init__(make_suite, prefix, feed_real)
        self.key = key

    def _feed(self, pl_module, outputs) -> None:
        super()._feed(pl_module, {"metrics": (outputs or {}).get(self.key)})


@torch.no_grad()
def round_trip(prior, inverter, x0: torch.Tensor, steps: int) -> torch.Tensor:
    x_T = samplers.ddim_invert(inverter, x0, num_steps=steps)
    return samplers.ddim_sample(prior, x_T, num_steps=steps, eta=0.0, clip_sample=False)


@torch.no_grad()
def _eps_mse(prior, x0: torch.Tensor, timesteps: torch.Tensor, seed: int) -> torch.Tensor:
    """Per image: mean over the schedule's timesteps of ‖ε − ε̂(√ᾱ x₀ + √(1−ᾱ) ε, t)‖² (per-element mean)."""
    gen = torch.Generator().manual_seed(seed)
    errs = []
    for t in timesteps:
        eps = torch.randn(x0.shape, generator=gen).to(x0.device)
        tt = t.to(x0.device).expand(len(x0))
        pred = prior.predict_eps(prior.add_noise(x0, eps, tt), tt)
        errs.append(((pred - eps) ** 2).flatten(1).mean(1))
    return torch.stack(errs).mean(0)


def _write_table(path: Path, rows: dict[str, dict[str, float]]) -> None:
    cols = sorted({c for r in rows.values() for c in r})
    csv = (
        "model,"
        + ",".join(cols)
        + "\n"
        + "".join(
            f"{name}," + ",".join(f"{r.get(c, float('nan')):.6g}" for c in cols) + "\n" for name, r in rows.items()
        )
    )
    md = (
        "| model | "
        + " | ".join(cols)
        + " |\n|---|"
        + "---|" * len(cols)
        + "\n"
        + "".join(
            f"| {name} | " + " | ".join(f"{r.get(c, float('nan')):.4g}" for c in cols) + " |\n"
            for name, r in rows.items()
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path.with_suffix(".csv"), lambda tmp: Path(tmp).write_text(csv))
    atomic_write(path.with_suffix(".md"), lambda tmp: Path(tmp).write_text(md))


def run_reconstruct(module, ctx: StageContext) -> dict[str, float]:
    r = module.cfg.reconstruct
    loader = test_loader(module, ctx, r.max_images, r.batch_size)
    n = len(loader.dataset)
    out = ctx.run_dir / "reconstruct"
    keys = ("input", "rectified", "base") if r.base else ("input", "rectified")
    writer = ImageWriter(out, grid_keys=("input", "rectified"), grid_columns=r.grid_columns, grid_max=r.grid_max,
                         log_key="reconstruct/grid")  # fmt: skip
    scorers = {
        "rectified": KeyedMetrics(
            module.metric_suite(r.metrics, module.cfg.eval, n, text=False), "reconstruct/rectified", "rectified"
        )
    }
    if r.base:
        scorers["base"] = KeyedMetrics(
            module.metric_suite(r.metrics, module.cfg.eval, n, text=False), "reconstruct/base", "base"
        )
    grid = ddim_timesteps(module.base, r.steps)
    module.rectifier.eval()

    @torch.no_grad()
    def step(batch: dict, batch_idx: int) -> dict:
        x0 = batch["image"].to(module.device).float()
        module._check_size(x0)
        base, rectified = module.base, module.rectified(module.rectifier, x0)
        inverter = rectified if r.invert_with == "rectified" else base
        images = {"input": x0, "rectified": round_trip(rectified, inverter, x0, r.steps)}
        result = {"names": _names(batch), "images": images}
        models = {"rectified": rectified, **({"base": base} if r.base else {})}
        for name, prior in models.items():
            if name == "base":
                images["base"] = round_trip(base, base, x0, r.steps)
            scalars = {EPS_MSE: _eps_mse(prior, x0, grid, r.seed + batch_idx)} if EPS_MSE in r.metrics else {}
            result[name] = {"paired": (images[name], x0), "scalars": scalars}
        return result

    module.run_predict(ctx, loader, step, callbacks=[writer, *scorers.values()])
    metrics = {k: v for s in scorers.values() for k, v in s.result.items()}
    metrics["reconstruct/num_images"] = float(n)
    rows = {name: {k.rsplit("/", 1)[1]: v for k, v in s.result.items()} for name, s in scorers.items()}
    _write_table(out / "table", {"base" if k == "base" else "rectifier": v for k, v in reversed(rows.items())})
    ctx.write_metrics(metrics)
    log.info("reconstruct (%d images, %d steps, keys %s): %s", n, r.steps, keys, rows)
    return metrics


def run_eval(module, ctx: StageContext) -> dict[str, float]:
    """``eval.folder.pred`` vs ``eval.folder.ref``; unset, this run's edits (``edit/edited`` vs ``edit/source``)."""
    folder = module.cfg.eval.folder
    if not folder.pred:
        pred, ref = ctx.run_dir / "edit" / "edited", ctx.run_dir / "edit" / "source"
        if not pred.is_dir():
            raise UserError(
                f"stage eval: no edits in {pred} — run stage edit first, or score any folders with "
                "method.eval.folder.pred=<edited> method.eval.folder.ref=<sources>"
            )
        folder = dataclasses.replace(folder, pred=str(pred), ref=str(ref))
    return module.evaluate_folder(ctx, folder)
