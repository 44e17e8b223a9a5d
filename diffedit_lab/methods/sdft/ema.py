"""The EMA of the student: torch's ``AveragedModel`` with its EMA averaging function.

``θ_ema ← d·θ_ema + (1 − d)·θ`` after every optimiser step, starting from the source weights (as guided-diffusion
initialises its EMA: ``AveragedModel`` would otherwise copy the weights of the first update). Buffers are averaged
too. The ``AveragedModel`` is a registered child of the module, so it is checkpointed (``n_averaged`` included)
and resumes bit-exactly.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMAModel(AveragedModel):
    """An ``AveragedModel`` that is always in eval mode: it is only ever sampled from, so dropout (0.1 in the ADM
    source model) must stay off even when Lightning switches the module's children to train mode for ``fit``."""

    def train(self, mode: bool = True) -> EMAModel:
        return super().train(False)


def make_ema(model: nn.Module, decay: float) -> EMAModel:
    """An EMA copy of ``model`` (frozen, eval mode), initialised to ``model``'s current weights."""
    ema = EMAModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False).eval()
    ema.update_parameters(model)  # the first update copies: the average starts at the source weights
    return ema
