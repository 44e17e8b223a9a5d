"""``UnconditionalPrior.forward_raw(params=..., batched=True)``: one substituted tensor per sample, vmapped, equal to
substituting each sample's tensors in its own call; shapes checked with the batch axis."""

from __future__ import annotations

import pytest
import torch

from diffedit_lab.testing.priors import tiny_unet_prior


def test_batched_params_equal_one_call_per_sample():
    prior = tiny_unet_prior()
    name = "up_blocks.1.resnets.0.conv1.weight"
    w = prior.unet.get_parameter(name)
    g = torch.Generator().manual_seed(0)
    per_sample = w * (1 + 0.3 * torch.randn(2, *w.shape, generator=g))
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([10, 700])
    with torch.no_grad():
        out = prior.predict_eps(x, t, params={name: per_sample}, batched=True)
        ref = torch.cat([prior.predict_eps(x[i : i + 1], t[i : i + 1], params={name: per_sample[i]}) for i in range(2)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"wrong shape.*\(3, 16"):
        prior.predict_eps(x, t, params={name: per_sample[:1].expand(3, *w.shape)}, batched=True)
    with pytest.raises(ValueError, match="wrong shape"):
        prior.predict_eps(x, t, params={name: per_sample}, batched=False)
