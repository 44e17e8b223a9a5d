"""EGSDE's time-dependent domain classifier: source domain (label 0) vs target domain (label 1) on noisy images.

Its last feature map is EGSDE's "domain-specific feature extractor" (the realism energy, :mod:`.egsde`). It is
trained by SDFT's ``train_classifier`` stage (its own LightningModule and Trainer, ``checkpoints/train_classifier/``;
the paper: 10K FFHQ images vs the target set, 1500 iterations for MetFaces, 4500 for limited AAHQ) on images noised
like the diffusion model's forward process at t ~ U{0..T−1}, and exported as ``domain_classifier.safetensors``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningDataModule, LightningModule
from torch import nn

from diffedit_lab.diffusion import schedule
from diffedit_lab.utils import rng as rng_utils


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(F.silu(emb))[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class DomainClassifier(nn.Module):
    """A small time-conditioned CNN: stem, one residual block per level (halving the resolution after each but the
    last), then global pooling and a linear logit. ``features(x, t)`` is the last feature map."""

    def __init__(self, channels: tuple[int, ...] = (64, 128, 256, 256), groups: int = 32, in_channels: int = 3):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        time_dim = 4 * channels[0]
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(channels[0], time_dim)
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        widths = [channels[0], *channels]
        self.blocks = nn.ModuleList(_ResBlock(a, b, time_dim, groups) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Sequential(nn.GroupNorm(groups, channels[-1]), nn.SiLU())
        self.out = nn.Linear(channels[-1], 1)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(self.time_proj(t.reshape(-1).expand(x.shape[0])).to(x.dtype))
        h = self.stem(x)
        for i, block in enumerate(self.blocks):
            h = block(h, emb)
            if i < len(self.blocks) - 1:
                h = F.avg_pool2d(h, 2)
        return self.head(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x, t).mean(dim=(2, 3))).squeeze(1)


class TwoDomains(LightningDataModule):
    """Training batches ``{"source": …, "target": …}`` from two image datamodules (each its own resumable loader),
    cycling the shorter one."""

    def __init__(self, source, target) -> None:
        super().__init__()
        self.source, self.target = source, target

    def setup(self, stage: str | None = None) -> None:
        self.source.setup("fit")
        self.target.setup("fit")

    def train_dataloader(self):
        from lightning.pytorch.utilities import CombinedLoader

        loaders = {"source": self.source.train_dataloader(), "target": self.target.train_dataloader()}
        return CombinedLoader(loaders, mode="max_size_cycle")


class DomainClassifierModule(LightningModule):
    """Trains :class:`DomainClassifier` with binary cross-entropy on x_t = √ᾱ x₀ + √(1−ᾱ) ε, t ~ U{0..T−1}."""

    def __init__(self, classifier: DomainClassifier, alphas_cumprod: torch.Tensor, lr: float, seed: int) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        self.lr = lr
        self.seed = int(seed)
        self._noise = torch.Generator().manual_seed(self.seed)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.classifier.parameters(), lr=self.lr, weight_decay=0.0)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x0 = torch.cat([batch["source"]["image"], batch["target"]["image"]]).float()
        labels = torch.cat([torch.zeros(len(batch["source"]["image"])), torch.ones(len(batch["target"]["image"]))])
        t = torch.randint(0, len(self.alphas_cumprod), (len(x0),), generator=self._noise)
        eps = torch.randn(x0.shape, generator=self._noise)
        t, eps, labels = t.to(self.device), eps.to(self.device), labels.to(self.device)
        logits = self.classifier(schedule.add_noise(x0, eps, self.alphas_cumprod, t), t)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        acc = ((logits > 0).float() == labels).float().mean()
        self.log_dict({"classifier/loss": loss.detach(), "classifier/acc": acc}, prog_bar=True, batch_size=len(x0))
        return loss

    def on_train_start(self) -> None:
        rng_utils.seed_stream(self, self._noise, self.seed, "classifier_noise_rng")  # DDP: every rank its own

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        rng_utils.save_stream(self, checkpoint, "classifier_noise_rng", self._noise)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng_utils.load_stream(self, checkpoint, "classifier_noise_rng", self._noise, self.seed)
