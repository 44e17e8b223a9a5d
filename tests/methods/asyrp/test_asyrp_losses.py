"""Asyrp's loss against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from diffedit_lab.methods.asyrp.losses import asyrp_loss, directional_term, text_cosine


class FakeCLIP:
    """directional_similarity returns fixed cosines; records what it was asked."""

    def __init__(self, cos):
        self.cos, self.calls = torch.tensor(cos), []

    def directional_similarity(self, src, tgt, src_text, tgt_text):
        self.calls.append((src, tgt, src_text, tgt_text))
        return self.cos


def _settings(**kw):
    base = dict(clip=1.0, recon_target="p_orig", clip_form="log", identity=0.0)
    return SimpleNamespace(**(base | kw))


def test_directional_term_forms():
    assert float(directional_term(torch.tensor(0.4), "log")) == pytest.approx(-math.log(0.8))
    assert float(directional_term(torch.tensor(0.4), "linear")) == pytest.approx(0.4)


def test_loss_by_hand():
    p_edit, p_orig, x0 = torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 4, 4), 0.2), torch.zeros(2, 3, 4, 4)
    clip = FakeCLIP([0.2, 0.6])  # d = 1 − 0.4 = 0.6 → ℓ = −log(0.7)
    t = asyrp_loss(p_edit, p_orig, x0, _settings(clip=2.0), clip, "face", "smiling face", recon_weight=1.5)
    assert float(t.clip) == pytest.approx(-math.log(0.7), rel=1e-6)
    assert float(t.recon) == pytest.approx(0.3)
    assert float(t.total) == pytest.approx(2 * -math.log(0.7) + 1.5 * 0.3, rel=1e-6)
    src, tgt, s, g = clip.calls[0]
    assert src is x0 and tgt is p_edit and (s, g) == ("face", "smiling face")  # the REAL image → P_t^edit
    t = asyrp_loss(p_edit, p_orig, x0, _settings(recon_target="x0", clip_form="linear"), clip, "a", "b", 1.0)
    assert float(t.recon) == pytest.approx(0.5) and float(t.clip) == pytest.approx(0.6)


def test_text_cosine_is_the_embeddings_dot_product():
    from diffedit_lab.testing.clip import tiny_clip

    clip = tiny_clip()
    emb = clip.encode_text(["face", "smiling face"])
    assert text_cosine(clip, "face", "smiling face") == pytest.approx(float(emb[0] @ emb[1]), rel=1e-6)
    assert text_cosine(clip, "face", "face") == pytest.approx(1.0, abs=1e-5)
