"""diffedit_lab.testing: the tiny models of tests/demo/bench, built from their configs, seeded, RNG-neutral."""

from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf

import diffedit_lab.testing as testing
from diffedit_lab.diffusion.priors import StableDiffusionPrior, UnconditionalPrior
from diffedit_lab.guidance.clip import CLIPGuide
from diffedit_lab.models.identity import IdentityEncoder, build_identity
from diffedit_lab.models.stylegan2 import StyleGAN2Generator, build_generator
from diffedit_lab.utils.config import CONF_DIR
from diffedit_lab.utils.instantiate import instantiate

TINY_CONFIGS = {
    "prior/tiny_sd": StableDiffusionPrior,
    "prior/tiny_unet": UnconditionalPrior,
    "generator/tiny": StyleGAN2Generator,
    "clip/tiny": CLIPGuide,
    "identity/tiny": IdentityEncoder,
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _node(name: str):
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    cfg.pop("domain", None)  # a description for config checks, not a builder argument (as methods do)
    return cfg


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_tiny_configs_point_at_testing_and_build_on_a_device(name):
    cfg = _node(name)
    assert cfg._target_.startswith("diffedit_lab.testing."), cfg._target_
    obj = instantiate(cfg, device="cpu")  # every component builder takes the device it will run on
    assert isinstance(obj, TINY_CONFIGS[name])
    if name != "generator/tiny":  # frozen pretrained stand-ins (a generator is frozen by whoever uses it)
        assert not any(p.requires_grad for p in obj.parameters())


def test_tiny_configs_keep_the_keys_other_configs_read():
    assert _node("prior/tiny_sd").image_size == 32 and instantiate(_node("prior/tiny_sd")).image_size == 32
    unet = instantiate(_node("prior/tiny_unet"))
    assert unet.learned_variance and unet.image_size == 32 and unet.dtype is torch.float32
    gen_cfg = OmegaConf.load(CONF_DIR / "generator/tiny.yaml")
    assert gen_cfg.domain == "any" and gen_cfg.checkpoint is None
    gen = instantiate(_node("generator/tiny"))
    assert (gen.size, gen.style_dim, gen.n_latent) == (gen_cfg.size, gen_cfg.style_dim, 8)
    assert OmegaConf.load(CONF_DIR / "identity/tiny.yaml").weights_path is None  # SDD checks this key


def test_builders_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    a = (testing.tiny_unet_prior(seed=0), testing.tiny_generator(seed=0), testing.tiny_identity(seed=0))
    b = (testing.tiny_unet_prior(seed=0), testing.tiny_generator(seed=0), testing.tiny_identity(seed=0))
    c = (testing.tiny_unet_prior(seed=1), testing.tiny_generator(seed=1), testing.tiny_identity(seed=1))
    guides = testing.tiny_clip(seed=0), testing.tiny_clip(seed=1)
    assert torch.equal(torch.rand(3), expected)
    for x, y, z in zip(a, b, c, strict=True):
        first = lambda m: next(iter(m.parameters()))
        assert torch.equal(first(x), first(y)) and not torch.equal(first(x), first(z))
    assert not torch.equal(guides[0].model.visual.conv1.weight, guides[1].model.visual.conv1.weight)


def test_tiny_sd_prior_shapes():
    prior = testing.tiny_sd_prior()
    assert prior.dtype is torch.float32 and prior.tokenizer.model_max_length == 16
    assert prior.encode_text(["a cat"]).shape == (1, 16, 32)
    assert prior.to_model_space(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 16, 16)


def test_production_builders_take_no_tiny_switch_and_accept_a_device():
    for builder in (build_generator, build_identity, StableDiffusionPrior.from_pretrained):
        params = inspect.signature(builder).parameters
        assert "tiny" not in params and "device" in params, builder.__name__
    assert "device" in inspect.signature(UnconditionalPrior.from_pretrained).parameters
    assert "device" in inspect.signature(CLIPGuide).parameters


def test_lazy_package_exports():
    assert set(testing.__all__) <= set(dir(testing))
    for name in testing.__all__:
        assert getattr(testing, name) is not None
    with pytest.raises(AttributeError):
        testing.no_such_builder  # noqa: B018
