"""Priors: the weight-loading paths a user runs (save a tiny model in diffusers layout, load it back),
offline errors, learned-variance splitting, classifier-free guidance and the text-embedding cache."""

import copy
import time

import huggingface_hub.constants
import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from diffedit_lab.diffusion.priors import StableDiffusionPrior, UnconditionalPrior, resolve_dtype
from diffedit_lab.testing.priors import tiny_sd_prior, tiny_unet_prior
from diffedit_lab.utils.errors import UserError


def _latents(batch=2, seed=0):
    return torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def _pixels(batch=2, seed=0):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- loading ---------------------------------------------------------------------------------------------------


def test_sd_save_and_load_round_trip(sd_prior, tmp_path):
    sd_prior.save_pretrained(tmp_path)
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / sub).is_dir()
    loaded = StableDiffusionPrior.from_pretrained(str(tmp_path), dtype="fp32", image_size=32)
    assert loaded.dtype == torch.float32
    assert not loaded.unet.training and not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded.alphas_cumprod, sd_prior.alphas_cumprod)

    prompts = ["a photo of a cat", ""]
    assert torch.equal(loaded.encode_text(prompts), sd_prior.encode_text(prompts))
    x, cond = _latents(), sd_prior.encode_text(prompts)
    torch.testing.assert_close(
        loaded.predict_eps(x, 321, cond=cond), sd_prior.predict_eps(x, 321, cond=cond), atol=0, rtol=0
    )
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.to_image_space(_latents(1)), sd_prior.to_image_space(_latents(1)), atol=0, rtol=0)
    assert loaded.to_model_space(images).shape == (1, 4, 16, 16)


def test_unconditional_save_and_load_round_trip(pixel_prior_lv, tmp_path):
    pixel_prior_lv.save_pretrained(tmp_path)
    loaded = UnconditionalPrior.from_pretrained(str(tmp_path), dtype="fp32")
    assert loaded.learned_variance and loaded.image_size == 32 and loaded.in_channels == 3
    assert torch.equal(loaded.alphas_cumprod, pixel_prior_lv.alphas_cumprod)
    x = _pixels()
    torch.testing.assert_close(loaded.forward_raw(x, 77), pixel_prior_lv.forward_raw(x, 77), atol=0, rtol=0)


def test_unconditional_folder_without_scheduler_gets_linear_ddpm(pixel_prior, tmp_path):
    pixel_prior.unet.save_pretrained(tmp_path)  # UNet only, no scheduler_config.json
    loaded = UnconditionalPrior.from_pretrained(str(tmp_path), dtype="fp32")
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod
    assert loaded.num_train_timesteps == 1000
    torch.testing.assert_close(loaded.alphas_cumprod, ref.float())


@pytest.mark.parametrize("cls", [StableDiffusionPrior, UnconditionalPrior])
def test_missing_local_path_is_user_error(cls):
    with pytest.raises(UserError, match="/nonexistent/sd"):
        cls.from_pretrained("/nonexistent/sd", dtype="fp32")


def test_existing_but_invalid_folder_is_user_error(tmp_path):
    (tmp_path / "readme.txt").write_text("not a model")
    with pytest.raises(UserError, match="not a valid"):
        UnconditionalPrior.from_pretrained(str(tmp_path), dtype="fp32")


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
@pytest.mark.parametrize("cls", [StableDiffusionPrior, UnconditionalPrior])
def test_hub_id_offline_is_fast_user_error(cls, monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once at import; patch the constant too, so the loaders fail at once
    # instead of retrying DNS for ~20 s. The id does not exist, so a user cache can never satisfy it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    source = "diffedit-lab-tests/no-such-model"
    start = time.monotonic()
    with pytest.raises(UserError, match=source) as info:
        cls.from_pretrained(source, dtype="fp32")
    assert "offline" in str(info.value)
    assert time.monotonic() - start < 5.0  # no network retries (they take ~20 s here)


# --- dtype -------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' means fp16 when CUDA is present")
def test_resolve_dtype_auto_is_fp32_on_cpu():
    assert resolve_dtype("auto") is torch.float32
    assert resolve_dtype(None) is torch.float32


def test_resolve_dtype_names():
    assert resolve_dtype("fp16") is torch.float16 and resolve_dtype("float16") is torch.float16
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("fp32") is torch.float32
    assert resolve_dtype(torch.float64) is torch.float64


@pytest.mark.parametrize("bad", ["fp8", "half", "FP32"])
def test_resolve_dtype_bad_is_user_error(bad):
    with pytest.raises(UserError, match=bad):
        resolve_dtype(bad)


# --- unconditional prior -----------------------------------------------------------------------------------------


def test_learned_variance_returns_eps_half(pixel_prior_lv):
    x = _pixels()
    raw = pixel_prior_lv.forward_raw(x, 10)
    assert raw.shape == (2, 6, 32, 32)
    eps = pixel_prior_lv.predict_eps(x, 10)
    assert eps.shape == (2, 3, 32, 32)
    assert torch.equal(eps, raw[:, :3])
    assert not torch.equal(eps, raw[:, 3:])


def test_fixed_variance_returns_all_channels(pixel_prior):
    x = _pixels()
    assert not pixel_prior.learned_variance
    raw = pixel_prior.forward_raw(x, 10)
    assert raw.shape == (2, 3, 32, 32) and torch.equal(pixel_prior.predict_eps(x, 10), raw)


def test_scalar_t_equals_per_sample_t(pixel_prior):
    x = _pixels()
    torch.testing.assert_close(pixel_prior.predict_eps(x, 250), pixel_prior.predict_eps(x, torch.tensor([250, 250])))
    per_sample = pixel_prior.predict_eps(x, torch.tensor([5, 900]))
    torch.testing.assert_close(per_sample[1:], pixel_prior.predict_eps(x[1:], 900), atol=1e-5, rtol=1e-5)


def test_frozen_unless_trainable():
    assert not any(p.requires_grad for p in tiny_unet_prior().parameters())
    trainable = tiny_unet_prior(trainable=True)
    assert all(p.requires_grad for p in trainable.parameters())


def test_casting_the_prior_keeps_alpha_bar_in_fp32():
    prior = tiny_unet_prior()
    prior.half()
    assert prior.alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(prior.alphas_cumprod, prior.scheduler.alphas_cumprod.float())


# --- Stable Diffusion prior: CFG and text cache ---------------------------------------------------------------


def test_guidance_scale_one_is_cond_only(sd_prior):
    x, t = _latents(), torch.tensor([100, 600])
    cond, uncond = sd_prior.encode_text(["a cat", "a dog"]), sd_prior.encode_text(["", ""])
    torch.testing.assert_close(
        sd_prior.predict_eps(x, t, cond=cond, uncond=uncond, guidance_scale=1.0), sd_prior.predict_eps(x, t, cond=cond)
    )


@pytest.mark.parametrize("scale", [0.0, 3.0, 7.5, 100.0])
def test_cfg_formula(sd_prior, scale):
    x, t = _latents(), torch.tensor([100, 600])
    cond, uncond = sd_prior.encode_text(["a cat", "a dog"]), sd_prior.encode_text(["", ""])
    eps_c = sd_prior.predict_eps(x, t, cond=cond)
    eps_u = sd_prior.predict_eps(x, t, cond=uncond)
    assert not torch.allclose(eps_c, eps_u, atol=1e-4)  # otherwise the check below is vacuous
    expected = eps_u + scale * (eps_c - eps_u)
    got = sd_prior.predict_eps(x, t, cond=cond, uncond=uncond, guidance_scale=scale)
    torch.testing.assert_close(got, expected, atol=1e-5 * max(1.0, scale), rtol=1e-4)


def test_missing_cond_means_empty_prompt(sd_prior):
    x = _latents()
    torch.testing.assert_close(
        sd_prior.predict_eps(x, 400), sd_prior.predict_eps(x, 400, cond=sd_prior.encode_text(["", ""]))
    )


class _CountingEncoder(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, input_ids, *args, **kwargs):
        self.batches.append(int(input_ids.shape[0]))
        return self.inner(input_ids, *args, **kwargs)


def test_encode_text_is_cached(sd_prior_copy):
    prior = sd_prior_copy
    fresh = prior.encode_text(["a cat", "a dog", "a cat"])  # computed before the wrapper: the reference
    prior._text_cache = {}
    counter = _CountingEncoder(prior.text_encoder)
    prior.text_encoder = counter

    first = prior.encode_text(["a cat", "a dog", "a cat"])
    assert counter.batches == [2]  # duplicates encoded once
    assert first.shape == (3, 16, 32)
    torch.testing.assert_close(first, fresh)
    assert torch.equal(first[0], first[2])

    again = prior.encode_text(["a dog", "a cat"])
    assert counter.batches == [2]  # no new call
    assert torch.equal(again, first[[1, 0]])
    prior.encode_text("a cat")
    assert counter.batches == [2]

    prior.encode_text(["a cat", "a bird"])
    assert counter.batches == [2, 1]  # only the new prompt is encoded

    prior.float()  # moving/casting the module invalidates the cache
    prior.encode_text(["a cat"])
    assert counter.batches == [2, 1, 1]


def test_sd_prior_is_frozen(sd_prior):
    assert not any(p.requires_grad for p in sd_prior.parameters())
    assert not sd_prior.unet.training and not sd_prior.vae.training and not sd_prior.text_encoder.training


# --- device-aware dtype ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cuda", torch.float16), ("cuda:1", torch.float16), (torch.device("cuda", 0), torch.float16)]
    + [("cpu", torch.float32), (torch.device("cpu"), torch.float32), ("meta", torch.float32)],
)
def test_resolve_dtype_auto_follows_the_device(monkeypatch, device, expected):
    # the device where the prior will run decides, whatever CUDA availability says
    for available in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda a=available: a)
        assert resolve_dtype("auto", device) is expected
        assert resolve_dtype(None, device) is expected
        assert resolve_dtype("bf16", device) is torch.bfloat16  # explicit names ignore the device


def test_resolve_dtype_auto_without_device_asks_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_dtype("auto") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_dtype("auto") is torch.float32


def test_builders_resolve_auto_for_their_device(pixel_prior, monkeypatch, tmp_path):
    pixel_prior.save_pretrained(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "auto" alone would mean fp16 now
    loaded = UnconditionalPrior.from_pretrained(str(tmp_path), dtype="auto", device="cpu")
    assert loaded.dtype is torch.float32 and loaded.alphas_cumprod.device.type == "cpu"
    assert tiny_unet_prior(dtype="auto", device="cpu").dtype is torch.float32
    assert tiny_sd_prior(dtype="auto", device="cpu").dtype is torch.float32
    assert UnconditionalPrior.from_pretrained(str(tmp_path), dtype="fp16", device="cpu").dtype is torch.float16


# --- substituted U-Net parameters (functional_call) --------------------------------------------------------------

CONV = "up_blocks.0.resnets.0.conv1.weight"


def test_params_equal_to_the_modules_own_give_identical_output(pixel_prior_lv):
    x, t = _pixels(), torch.tensor([10, 600])
    own = dict(pixel_prior_lv.unet.named_parameters())
    ref = pixel_prior_lv.predict_eps(x, t)
    assert torch.equal(pixel_prior_lv.predict_eps(x, t, params=own), ref)
    assert torch.equal(pixel_prior_lv.predict_eps(x, t, params={CONV: own[CONV]}), ref)  # partial dict
    assert torch.equal(pixel_prior_lv.predict_eps(x, t, params={}), ref)
    raw = pixel_prior_lv.forward_raw(x, t, params={CONV: own[CONV]})
    assert raw.shape == (2, 6, 32, 32) and torch.equal(raw, pixel_prior_lv.forward_raw(x, t))


def test_modified_conv_weight_equals_a_copy_with_that_weight(pixel_prior):
    x, t = _pixels(), 300
    weight = dict(pixel_prior.unet.named_parameters())[CONV]
    modulated = weight * (1 + 0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    copy_ = copy.deepcopy(pixel_prior)
    with torch.no_grad():
        dict(copy_.unet.named_parameters())[CONV].copy_(modulated)
    got = pixel_prior.predict_eps(x, t, params={CONV: modulated})
    torch.testing.assert_close(got, copy_.predict_eps(x, t), atol=0, rtol=0)
    assert not torch.allclose(got, pixel_prior.predict_eps(x, t), atol=1e-4)
    # the prior itself is untouched by the call
    assert torch.equal(dict(pixel_prior.unet.named_parameters())[CONV], weight)


@pytest.mark.parametrize("trainable", [False, True])
def test_gradients_reach_the_substituted_tensor_only(trainable):
    prior = tiny_unet_prior(trainable=trainable)
    own = dict(prior.unet.named_parameters())
    delta = torch.zeros_like(own[CONV], requires_grad=True)  # θ̂ = θ · (1 + Δ), Rectifier style
    eps = prior.predict_eps(_pixels(), 500, params={CONV: own[CONV].detach() * (1 + delta)})
    eps.square().mean().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    assert own[CONV].grad is None  # the replaced tensor is not used at all
    if trainable:  # the parameters that were not substituted still train
        assert own["conv_in.weight"].grad is not None
    else:
        assert all(p.grad is None for p in prior.parameters())


def test_params_with_unknown_names_or_wrong_shapes_fail(pixel_prior):
    with pytest.raises(KeyError, match="not U-Net parameters"):
        pixel_prior.predict_eps(_pixels(), 1, params={"up_blocks.0.nope.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="wrong shape"):
        pixel_prior.predict_eps(_pixels(), 1, params={CONV: torch.zeros(3, 3)})


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_per_sample_params_through_vmap(pixel_prior):
    """The Rectifier modulates every sample's kernels differently: vmap over (params, x, t)."""
    weight = dict(pixel_prior.unet.named_parameters())[CONV]
    weights = torch.stack([weight * 1.1, weight * 0.9])
    x, t = _pixels(), torch.tensor([10, 500])

    def one(w, xi, ti):
        return pixel_prior.predict_eps(xi[None], ti[None], params={CONV: w})[0]

    batched = torch.func.vmap(one)(weights, x, t)
    looped = torch.stack([one(weights[i], x[i], t[i]) for i in range(2)])
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
