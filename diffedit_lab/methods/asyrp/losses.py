"""Asyrp's training loss at one step t of the editing interval (the released code's formulation).

    L = λ_clip · ℓ_dir  +  λ_recon · c · ‖P_t^edit − R‖₁  (+ λ_id · (1 − cos(ArcFace(P_t^edit), ArcFace(R))))

* ``ℓ_dir``: the directional CLIP loss between the *real* image x₀ and the edited x₀ prediction P_t^edit, text
  direction ``prompt.source_text → prompt.text``. With d = mean over the batch of 1 − cos(ΔI, ΔT) (DiffusionCLIP's
  loss), ``clip_form=log`` is the released code's −log((2 − d)/2) = −log((1 + cos)/2); ``linear`` is d itself.
* ``R`` (``recon_target``): ``p_orig`` = P_t of the *unedited* DDIM trajectory from the same x_T at the same t
  (the released default), or ``x0`` = the real image.
* ``c``: with ``text_cosine_weight`` the L1 weight is scaled by cos(T(source), T(target)) of the two texts, as the
  released code does (similar texts → a stronger pull to the original), else 1.
* The identity term is off by default (λ_id = 0, the paper does not use it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class AsyrpTerms:
    total: Tensor
    clip: Tensor
    recon: Tensor
    identity: Tensor


def directional_term(d: Tensor, form: str) -> Tensor:
    """ℓ_dir from d = mean(1 − cos): ``log`` → −log((2 − d)/2), ``linear`` → d."""
    return -torch.log((2 - d) / 2) if form == "log" else d


def text_cosine(clip, source_text: str, text: str) -> float:
    """cos(T(source), T(target)) of the (unit-norm, template-averaged) CLIP text embeddings."""
    emb = clip.encode_text([source_text, text])
    return float((emb[0] * emb[1]).sum())


def asyrp_loss(
    p_edit: Tensor,
    p_orig: Tensor,
    x0: Tensor,
    settings,
    clip,
    source_text: str,
    text: str,
    recon_weight: float,
    identity=None,
) -> AsyrpTerms:
    """The loss above; ``recon_weight`` = λ_recon · c (computed once per run); ``settings`` = ``method.loss``."""
    zero = p_edit.new_zeros(())
    target = p_orig if settings.recon_target == "p_orig" else x0
    recon = (p_edit - target).abs().mean() if recon_weight > 0 else zero
    clip_term = zero
    if settings.clip > 0:
        d = 1 - clip.directional_similarity(x0, p_edit, source_text, text).mean()
        clip_term = directional_term(d, settings.clip_form)
    id_term = zero
    if settings.identity > 0 and identity is not None:
        id_term = identity.loss(target.detach(), p_edit)  # mean(1 − cos) of the ArcFace embeddings
    total = settings.clip * clip_term + recon_weight * recon + settings.identity * id_term
    return AsyrpTerms(total=total, clip=clip_term, recon=recon, identity=id_term)
