"""Asyrp's training set: the first ``fit.num_images`` training images and their DDIM inversions x_{t₀}.

Asyrp inverts every training image once ("precompute pairs") and then trains on (x₀, x_T) pairs for several
epochs. Here the pairs are cached as ``<cache_dir>/train-<key>.pt``; the key hashes the images' pixels, the prior's
U-Net weights (so ``prior.source=<sdft run>/ema_unet`` after another fine-tuning inverts again, whatever the path),
the inversion steps and t₀. A sweep over prompts on the same images and prior reuses one file; a resumed run loads
the same pairs it trained on. The pairs are served by the project's seeded, resumable train loader.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from diffedit_lab.data.sampler import ResumableDataLoader, resumable_train_loader
from diffedit_lab.methods.asyrp import process
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_torch_save
from diffedit_lab.utils.weights import load_weights

log = logging.getLogger(__name__)


class PairDataset(Dataset):
    """Items ``{"x0", "x_T", "index"}`` of the cached pairs (keys may be ``(index, flip)``: no flips here)."""

    def __init__(self, x0: torch.Tensor, x_T: torch.Tensor) -> None:
        self.x0, self.x_T = x0, x_T

    def __len__(self) -> int:
        return len(self.x0)

    def __getitem__(self, key) -> dict:
        index = int(key[0] if isinstance(key, tuple | list) else key)
        return {"x0": self.x0[index], "x_T": self.x_T[index], "index": index}


def fit_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images resized to the prior's resolution (bilinear, antialiased) when they are not already."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def training_images(datamodule, n: int, size: int) -> torch.Tensor:
    """The first ``n`` images of the train split, unflipped, at the prior's size: (N, 3, size, size) on CPU."""
    if datamodule is None or not hasattr(datamodule, "dataset"):
        raise UserError("Asyrp trains on images: choose an image dataset (data=celebahq, data=metfaces, data.root=…)")
    ds = datamodule.dataset("train")
    if len(ds) == 0:
        raise UserError("Asyrp: the train split of the dataset is empty")
    if len(ds) < n:
        log.warning("Asyrp: the train split has %d images, fewer than fit.num_images=%d; using them all", len(ds), n)
    items = [ds[(i, False)] for i in range(min(n, len(ds)))]
    return fit_images(torch.stack([it["image"] for it in items]).float(), size)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha1 of every parameter and buffer (names, dtypes, bytes): which weights inverted the images."""
    h = hashlib.sha1()
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pairs_key(images: torch.Tensor, prior, steps: int, t_0: int) -> str:
    h = hashlib.sha1(images.contiguous().numpy().tobytes())
    h.update(f"{weights_fingerprint(prior.unet)}|{steps}|{t_0}".encode())
    return h.hexdigest()[:16]


def inversion_pairs(module, datamodule, cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, x_T) of the training images, from the cache or inverted now (``invert.batch_size`` at a time)."""
    c, prior = module.cfg, module.prior
    x0 = training_images(datamodule, c.fit.num_images, prior.image_size)
    if len(x0) < c.fit.batch_size:
        raise UserError(f"method.fit.batch_size={c.fit.batch_size}: more than the {len(x0)} training images; lower it")
    path = cache_dir / f"train-{pairs_key(x0, prior, c.invert.steps, c.schedule.t_0)}.pt"
    if path.is_file():
        try:
            saved = load_weights(path, "Asyrp inversion cache")
        except UserError as exc:  # a damaged cache file is recomputed (and replaced atomically below)
            log.warning("%s: inverting again", exc)
            saved = None
        if isinstance(saved, dict) and isinstance(saved.get("x0"), torch.Tensor) and torch.equal(saved["x0"], x0):
            log.info("reusing the inverted training images from %s", path)
            return x0, saved["x_T"]
    log.info("inverting %d training images (%d DDIM steps) → %s", len(x0), c.invert.steps, path)
    t0, bs, out = time.perf_counter(), c.invert.batch_size, []
    for start in range(0, len(x0), bs):
        batch = x0[start : start + bs].to(module.device)
        out.append(process.invert(prior, batch, c.invert.steps, c.schedule.t_0).cpu())
    x_T = torch.cat(out)
    atomic_torch_save({"x0": x0, "x_T": x_T, "steps": c.invert.steps, "t_0": c.schedule.t_0}, path)
    log.info("inverted %d images in %.1fs", len(x0), time.perf_counter() - t0)
    return x0, x_T


def pairs_loader(x0: torch.Tensor, x_T: torch.Tensor, batch_size: int, seed: int) -> ResumableDataLoader:
    """Shuffled per epoch from ``seed`` (resumable mid-epoch); incomplete last batches are dropped, as Asyrp."""
    return resumable_train_loader(PairDataset(x0, x_T), batch_size, seed, drop_last=True)
