"""The h-space hook: Δh = 0 at init is exactly the base model, only the bottleneck is shifted, no U-Net gradient."""

from __future__ import annotations

import pytest
import torch

from diffedit_lab.methods.asyrp import process
from diffedit_lab.methods.asyrp.hspace import DeltaBlock, HSpaceShift, build_delta
from diffedit_lab.utils.errors import UserError
from tests.methods.asyrp.conftest import nonzero_shift


def _x(seed=0, b=2):
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_zero_init_is_exactly_the_base_model(prior):
    shift = HSpaceShift(prior.unet, build_delta(prior.unet))
    x = _x()
    with torch.no_grad():
        base = prior.predict_eps(x, 999)
        e, e_s = process.eps_pair(prior, shift, x, 999)
        edited = process.generate(prior, x, 6, 999, shift, t_edit=0, t_boost=200, boost_eta=1.0,
                                  noise=lambda z: torch.ones_like(z))  # fmt: skip
        plain = process.generate(prior, x, 6, 999, None, t_boost=200, boost_eta=1.0, noise=lambda z: torch.ones_like(z))
    assert torch.equal(e, base) and torch.equal(e_s, base)
    assert torch.equal(edited, plain)


def test_the_hook_shifts_only_the_bottleneck_and_is_removed_after(prior):
    shift = nonzero_shift(prior)
    unet = prior.unet
    seen: dict[str, list] = {"down": [], "mid": [], "up_in": []}

    def up_input(module, args, kwargs):
        seen["up_in"].append((args[0] if args else kwargs["hidden_states"]).clone())

    def mid(module, args, out):  # registered before the shift's hook: sees the unshifted h
        seen["mid"].append((args[0].clone(), args[1].clone(), out.clone()))

    hooks = [b.register_forward_hook(lambda m, a, o: seen["down"].append(o[0].clone())) for b in unet.down_blocks]
    hooks.append(unet.up_blocks[0].register_forward_pre_hook(up_input, with_kwargs=True))
    hooks.append(unet.mid_block.register_forward_hook(mid))
    x = _x()
    try:
        with torch.no_grad():
            base = prior.predict_eps(x, 700)
            with shift.active(scale=0.5):
                shifted = prior.predict_eps(x, 700)
            after = prior.predict_eps(x, 700)
    finally:
        for h in hooks:
            h.remove()
    n = len(unet.down_blocks)
    for a, b in zip(seen["down"][:n], seen["down"][n : 2 * n], strict=True):
        assert torch.equal(a, b)  # the encoder is untouched
    (h_in, temb, h_base), (h_in_shifted, _, _) = seen["mid"][0], seen["mid"][1]
    assert torch.equal(h_in, h_in_shifted)  # the bottleneck's input is the same
    delta = shift.delta(h_base, temb)
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(seen["up_in"][1], h_base + 0.5 * delta)  # the decoder gets h + scale·Δh
    assert torch.equal(seen["up_in"][0], h_base) and torch.equal(seen["up_in"][2], h_base)
    assert (shifted - base).abs().max() > 1e-4 and torch.equal(after, base)
    assert not unet.mid_block._forward_hooks_with_kwargs  # nothing left behind on the (shared) prior


def test_training_gradients_reach_only_the_delta_network(prior):
    shift = HSpaceShift(prior.unet, build_delta(prior.unet))  # zero init: the last layer still gets a gradient
    x = _x(b=1)
    e_s = process.eps_shifted(prior, shift, x, 900)
    process.predict_x0(x, e_s, prior.alphas_cumprod[900]).abs().mean().backward()
    assert all(not p.requires_grad and p.grad is None for p in prior.unet.parameters())
    assert shift.delta.conv_out.weight.grad.abs().sum() > 0
    assert shift.delta.conv_in.weight.grad.abs().sum() == 0  # behind the zeroed layer at the first step


def test_bad_group_count_is_one_line():
    with pytest.raises(UserError, match="not divisible by 32 groups"):
        DeltaBlock(48, 64, groups=32)
