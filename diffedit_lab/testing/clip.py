"""The tiny random open_clip model of tests and the offline demo (``clip=tiny``), wrapped in the real
:class:`~diffedit_lab.guidance.clip.CLIPGuide` (real preprocessing, real BPE tokenizer, text cache)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import open_clip
import torch
from torch import nn

from diffedit_lab.guidance.clip import CLIPGuide
from diffedit_lab.testing._seed import seeded

# Small enough to build in milliseconds on CPU, big enough to exercise every code path (2 heads, 2 layers).
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
_PRECISION = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def tiny_clip_model(seed: int = 0, precision: str = "fp32") -> nn.Module:
    """An ``open_clip.CLIP(**TINY_CLIP_CFG)`` with random weights from ``seed`` (global RNG left alone): 32 px
    images, width 32, 2 layers, 32-d embeddings; the real 49408-token vocabulary."""
    with seeded(seed):
        model = open_clip.CLIP(**copy.deepcopy(TINY_CLIP_CFG))
    return model.to(dtype=_PRECISION.get(precision, torch.float32))


def tiny_clip(
    model_name: str = "ViT-B-32",
    templates: Sequence[str] | None = None,
    precision: str = "fp32",
    seed: int = 0,
    device: torch.device | str | None = None,
) -> CLIPGuide:
    """A frozen :class:`CLIPGuide` around :func:`tiny_clip_model`; ``model_name`` only names the (real, bundled)
    BPE tokenizer. Identical in every run and process for a given ``seed``."""
    guide = CLIPGuide(
        model_name=model_name,
        templates=templates,
        model=tiny_clip_model(seed, precision),
        model_cfg=copy.deepcopy(TINY_CLIP_CFG),
        device=device,
    )
    guide.name = "tiny"
    return guide
