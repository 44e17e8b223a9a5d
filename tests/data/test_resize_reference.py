"""Resize/crop/mirror now go through torchvision.transforms.v2: the pixels equal the released code's PIL arithmetic
(bicubic resize so the short side fits, crop offset rounded down, mirror), computed here by hand with PIL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffedit_lab.data.images import decode_image, pil_to_tensor, resize_image


def _reference(img: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    (h_out, w_out), (w, h) = size, img.size
    if mode == "resize":
        return img if (w, h) == (w_out, h_out) else img.resize((w_out, h_out), Image.BICUBIC)
    scale = max(h_out / h, w_out / w)
    nw, nh = max(w_out, round(w * scale)), max(h_out, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC) if (nw, nh) != (w, h) else img
    left, top = (nw - w_out) // 2, (nh - h_out) // 2
    return img.crop((left, top, left + w_out, top + h_out))


@pytest.mark.parametrize("w,h", [(1024, 768), (333, 517), (97, 255), (256, 256)])
@pytest.mark.parametrize("size", [(256, 256), (64, 96), (255, 127)])
@pytest.mark.parametrize("mode", ["center_crop", "resize"])
def test_pixels_equal_the_pil_reference(w, h, size, mode):
    img = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))
    ref = _reference(img, size, mode)
    assert np.array_equal(np.asarray(resize_image(img, size, mode)), np.asarray(ref))
    mirrored = decode_image(img, size, mode, flip=True)
    assert torch.equal(mirrored, pil_to_tensor(ref.transpose(Image.FLIP_LEFT_RIGHT)))
