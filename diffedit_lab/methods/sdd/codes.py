"""SDD on image datasets: invert each split's photos into W+ once, cache the codes, then serve them as codes.

SDD edits StyleGAN2 W+ codes. With ``data=latents`` the codes are given (a ``.pt`` file) or sampled from the
generator; with an image datamodule (``data=celebahq|ffhq|afhq_cat|lsun_car|…``) each split is inverted with the
batched optimisation projector (:mod:`diffedit_lab.models.projector`) the first time a stage needs it. The codes
are cached as ``<cache_dir>/<split>-<key>.pt``; the key hashes the dataset config, the split's file list, the
generator config and the projector settings, so a changed folder, generator or setting inverts again while
every other run (and every job of a sweep) reuses the file. From then on the stages see a
:class:`~diffedit_lab.data.latents.LatentCodesDataModule` over those files, exactly as with ``data=latents``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from diffedit_lab.data.datamodule import ImageDataModule
from diffedit_lab.data.latents import LatentCodesDataModule
from diffedit_lab.methods.stage import StageContext
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_torch_save

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
WAIT_S = 24 * 3600  # DDP ranks > 0 wait this long for rank 0's inversion


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def describe_images(dm: ImageDataModule) -> dict:
    """What decides the pixels of an image datamodule's items (the file list is hashed per split)."""
    root = dm.root.resolve() if dm.root is not None else None
    return {"class": type(dm).__name__, "root": str(root), "size": list(dm.size), "resize_mode": dm.resize_mode,
            "seed": dm.seed}  # fmt: skip


def codes_key(dataset: dict, split: str, files: list[str], generator_cfg: dict, projector: dict) -> str:
    """What the codes of one split depend on; equal keys ⇒ the cached inversion is valid."""
    files_hash = hashlib.sha1("\n".join(files).encode()).hexdigest()
    generator = {k: v for k, v in generator_cfg.items() if k != "domain"}
    blob = {"data": dataset, "split": split, "files": files_hash, "generator": generator, "projector": projector}
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _split_files(dataset) -> list[str]:
    keys = getattr(dataset, "keys", None) or getattr(dataset, "indices", None)  # image files / synthetic indices
    return [str(k) for k in keys] if keys is not None else [str(i) for i in range(len(dataset))]


def invert_split(module, dataset, settings, desc: str) -> tuple[torch.Tensor, list[str]]:
    """W+ codes of every image of ``dataset`` (no flips), ``settings.batch_size`` at a time, with a progress bar."""
    from tqdm.auto import tqdm

    from diffedit_lab.models.projector import project

    gen = module.generator
    size = tuple(getattr(gen, "output_size", ()) or ())
    n = len(dataset)
    codes, names = [], []
    bs = int(settings.batch_size)
    for b, start in enumerate(tqdm(range(0, n, bs), desc=desc, unit="batch")):
        items = [dataset[(i, False)] for i in range(start, min(n, start + bs))]  # (index, flip=False)
        images = torch.stack([it["image"] for it in items]).to(module.device)
        if size and tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        with torch.enable_grad():
            w = project(gen, images, steps=settings.steps, lr=settings.lr, seed=settings.seed + b, progress=False)
        codes.append(w.cpu())
        names += [Path(str(it.get("path", start + k))).stem for k, it in enumerate(items)]
    return torch.cat(codes), names


def _cache_dir(module, ctx: StageContext) -> Path:
    d = module.cfg.invert.cache_dir
    return Path(d).expanduser() if d else ctx.run_dir / "codes"


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.is_file():
        if time.monotonic() > deadline:
            raise UserError(f"waited for rank 0 to write the inverted codes '{path}' and gave up")
        time.sleep(2.0)


def codes_datamodule(module, ctx: StageContext) -> LatentCodesDataModule:
    """The codes datamodule for ``ctx.datamodule`` (an image datamodule), inverting what is not cached yet."""
    dm = ctx.datamodule
    s = module.cfg.invert
    projector = {"steps": s.steps, "lr": s.lr, "seed": s.seed}
    generator_cfg = _plain(module.cfg.generator) or {}
    cache = _cache_dir(module, ctx)
    files: dict[str, Path] = {}
    for split in SPLITS:
        dataset = dm.dataset(split)
        if len(dataset) == 0:
            raise UserError(f"SDD on images: the '{split}' split of data.root is empty; it needs photos to invert")
        key = codes_key(describe_images(dm), split, _split_files(dataset), generator_cfg, projector)
        path = cache / f"{split}-{key}.pt"
        if not path.is_file():
            if ctx.global_rank != 0:
                _wait_for(path)
            else:
                log.info("inverting the %s split (%d images, %d projector steps) into W+ → %s",
                         split, len(dataset), s.steps, path)  # fmt: skip
                t0 = time.perf_counter()
                codes, names = invert_split(module, dataset, s, desc=f"invert {split}")
                meta = {"split": split, "projector": projector, "generator": generator_cfg}
                atomic_torch_save({"codes": codes, "names": names, "meta": meta}, path)
                log.info("inverted %d %s images in %.1fs", len(codes), split, time.perf_counter() - t0)
        else:
            log.info("reusing inverted %s codes from %s", split, path)
        files[split] = path
    return LatentCodesDataModule(
        codes=str(files["train"]),
        test_codes=str(files["test"]),
        num_train=0,
        num_test=0,
        batch_size=dm.batch_size,
        eval_batch_size=dm.eval_batch_size,
        num_workers=0,
        seed=dm.seed,
    )


def use_codes(module, ctx: StageContext) -> None:
    """Before a stage: swap an image datamodule for the codes of its inverted splits (once per run)."""
    if isinstance(ctx.datamodule, ImageDataModule):
        ctx.datamodule = codes_datamodule(module, ctx)
