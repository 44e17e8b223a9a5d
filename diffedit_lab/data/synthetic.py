"""Generated images with no files at all: smooth random colour fields, reproducible per (seed, index).

White noise is a poor stand-in for images (diffusion models and metrics behave very differently on it), so
each image is a sum of a few upsampled noise octaves: large smooth blobs plus some finer detail. Every image
depends only on the seed and its global index, so splits, workers and reruns all see the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from diffedit_lab.data.datamodule import SPLITS, ImageDataModule
from diffedit_lab.data.images import split_draw
from diffedit_lab.utils.errors import UserError

_OCTAVES = ((4, 1.0), (8, 0.5), (16, 0.25))  # (grid size, amplitude)


def smooth_random_image(index: int, seed: int, size: tuple[int, int]) -> torch.Tensor:
    """A (3, H, W) image in [-1, 1]; the same (index, seed, size) always gives the same tensor."""
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63))
    out = torch.zeros(1, 3, *size)
    for grid, amplitude in _OCTAVES:
        noise = torch.randn(1, 3, grid, grid, generator=gen)
        out += amplitude * F.interpolate(noise, size=size, mode="bicubic", align_corners=False)
    return torch.tanh(out[0])


class SyntheticImageDataset(Dataset):
    """Items like :class:`ImageDataset`'s, with ``path`` a virtual name that identifies the image."""

    def __init__(self, indices: Sequence[int], size: tuple[int, int], seed: int, hflip: bool = False):
        self.indices = list(indices)
        self.size = size
        self.seed = seed
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict:
        index, flip = split_draw(key, self.hflip)
        global_index = self.indices[index]
        image = smooth_random_image(global_index, self.seed, self.size)
        if flip:
            image = image.flip(-1)
        return {"image": image, "path": f"synthetic/{global_index:06d}.png", "index": index}


class SyntheticDataModule(ImageDataModule):
    """``num_images`` generated images split by ``val_fraction``/``test_fraction`` (seeded, like ratio)."""

    def __init__(
        self,
        num_images: int = 32,
        resolution: int | Sequence[int] = 32,
        val_fraction: float = 0.125,
        test_fraction: float = 0.125,
        max_images: int | None = None,
        hflip: bool = False,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
    ):
        super().__init__(
            root=None,
            resolution=resolution,
            hflip=hflip,
            split_mode="ratio",
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            max_images=max_images,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            layout_hint="synthetic images are generated, no files needed",
        )
        if int(num_images) < 1:
            raise UserError(f"data.num_images must be >= 1, got {num_images!r}")
        self.num_images = int(num_images)

    def preflight(self) -> None:  # generated: no root, no files
        return

    def _build_datasets(self) -> dict[str, Dataset]:
        keys = [str(i) for i in range(self.num_images)]
        splits = self._ratio_split(keys)
        datasets: dict[str, Dataset] = {}
        for split in SPLITS:
            indices = [int(k) for k in splits[split]][: self.max_images]
            flip = self.hflip and split == "train"
            datasets[split] = SyntheticImageDataset(indices, self.size, self.seed, flip)
        return datasets

    def describe(self) -> dict:
        info = super().describe()
        info["root"] = f"synthetic(num_images={self.num_images}, seed={self.seed})"
        return info
