"""Project metrics as torchmetrics ``Metric``s: directional CLIP similarity, CLIP score, identity similarity.

Each is a :class:`torchmetrics.aggregation.MeanMetric` fed per-sample scores: it keeps a running (sum, count)
reduced by summing across DDP ranks, so the value is the mean over every sample seen on every rank — not a
mean of per-batch or per-rank means. Pixel metrics (PSNR, SSIM, L1, L2) reuse torchmetrics directly; see
:mod:`diffedit_lab.evaluation.suite` for their [0, 1] range convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric

from diffedit_lab.guidance.clip import CLIPGuide


class _SampleMean(MeanMetric):
    """Mean of per-sample scores; NaN scores propagate (``nan_strategy="disable"``), as a plain mean would."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("nan_strategy", "disable")
        super().__init__(**kwargs)

    def _add(self, scores: Tensor) -> None:
        super().update(scores.detach().flatten())


class DirectionalCLIPSimilarity(_SampleMean):
    """Mean cos(E(edited) − E(source), T(tgt) − T(src)): does the edit move the way the text does?"""

    def __init__(self, clip: CLIPGuide, src_text: str, tgt_text: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clip = clip
        self.src_text, self.tgt_text = src_text, tgt_text

    @torch.no_grad()
    def update(self, src_images: Tensor, tgt_images: Tensor) -> None:
        self._add(self.clip.directional_similarity(src_images, tgt_images, self.src_text, self.tgt_text))


class CLIPScore(_SampleMean):
    """Mean ``scale`` · cos(E(image), T(text)), unclamped. torchmetrics reports max(100·cos, 0) and
    Hessel et al. 2.5·max(cos, 0); ``scale=100`` matches the former for positive cosines. ``texts``
    given to ``update`` override ``text``.
    """

    def __init__(self, clip: CLIPGuide, text: str | None = None, scale: float = 100.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clip, self.text, self.scale = clip, text, scale

    @torch.no_grad()
    def update(self, images: Tensor, texts: str | Sequence[str] | None = None) -> None:
        texts = texts if texts is not None else self.text
        if texts is None:
            raise ValueError("CLIPScore needs a text: pass `text=` at construction or `texts=` to update")
        self._add(self.scale * self.clip.clip_score(images, texts))


class IdentitySimilarity(_SampleMean):
    """Mean cosine between ``encoder`` embeddings of paired images (e.g. ArcFace on source vs edited faces).

    ``encoder`` maps [-1, 1] images (B,3,H,W) to embeddings (B,D); they are re-normalised here, so an
    encoder that already returns unit vectors is unaffected.
    """

    def __init__(self, encoder: nn.Module, **kwargs) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder

    @torch.no_grad()
    def update(self, a: Tensor, b: Tensor) -> None:
        ea, eb = self.encoder(a).float(), self.encoder(b).float()
        self._add(torch.nn.functional.cosine_similarity(ea, eb, dim=-1))
