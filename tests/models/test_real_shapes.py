"""``random_weights``: every file/hub-backed component at its released architecture with random weights — an explicit
switch (a boolean, one WARNING line per component, recorded in the run's config), never a silent fallback.

Parameter counts are those of the released models. On the ``meta`` device a build allocates nothing (milliseconds
to seconds); the real CPU builds with a forward pass at the real input size are marked slow.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
from omegaconf import OmegaConf

from diffedit_lab import checks
from diffedit_lab.diffusion.priors import StableDiffusionPrior, UnconditionalPrior
from diffedit_lab.diffusion.priors.shape import describe_prior
from diffedit_lab.guidance.clip import CLIPGuide
from diffedit_lab.models import real_shapes
from diffedit_lab.models.identity import build_identity
from diffedit_lab.models.stylegan2 import build_generator
from diffedit_lab.utils.config import compose_config
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.schema import ConfigError

WARNING = re.compile(
    r"random weights at the real shape of .+: results are meaningless; for shape/memory/smoke checks only"
)
# Parameters of the released models (their config.json / open_clip config / checkpoints).
SD14_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
DDPM_256_PARAMS = 113_673_219  # google/ddpm-ema-celebahq-256 and -church-256
ADM_FFHQ_PARAMS = 93_563_910  # P2-weighting's ffhq_p2.pt ("93M"; the converter checked at 93.6M)
STYLEGAN2_F_1024_PARAMS = 30_370_060  # rosinality config-f 1024 g_ema (≈ 30.4M)
IRSE50_PARAMS = 43_797_696
CLIP_VIT_B32_PARAMS = 151_277_313

# Every component config the paper presets load from a file or the hub carries the switch.
COMPONENTS = {
    "prior": ["sd14", "sd15", "ddpm_celebahq", "ddpm_church", "adm_ffhq"],
    "generator": ["ffhq", "afhq_cat", "lsun_car"],
    "clip": ["vit_b32"],
    "identity": ["arcface"],
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def warnings_in(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return [line for line in lines if WARNING.fullmatch(line)]


@pytest.fixture
def offline_everything(monkeypatch):
    """Any attempt to read a weight file or reach the hub fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a random-weights build touched a weight source: {args[:2]}")

    import diffusers
    import open_clip

    from diffedit_lab.diffusion.priors import base
    from diffedit_lab.models import identity
    from diffedit_lab.models.stylegan2 import checkpoint

    monkeypatch.setattr(base, "load_component", refuse)
    monkeypatch.setattr(identity, "load_weights", refuse)
    monkeypatch.setattr(checkpoint, "read_checkpoint", refuse)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", refuse)
    monkeypatch.setattr(diffusers.DDPMScheduler, "from_pretrained", refuse)


# ------------------------------------------------------------------------------------------------- the switch
def test_the_root_key_is_false_and_the_debug_preset_turns_it_on_with_two_steps(tmp_path):
    base = compose_config(["method=sdd", f"paths.output_dir={tmp_path}"])
    assert base.random_weights is False
    cfg = compose_config(["method=sdd", f"paths.output_dir={tmp_path}", "debug=real_shapes", "logger=csv"])
    assert cfg.random_weights is True and cfg.trainer.max_steps == 2 and cfg.data.num_workers == 0
    assert cfg.logger is not None  # the user's logger is kept (debug=default would switch it off)
    assert cfg.trainer.get("accelerator") == base.trainer.get("accelerator")  # and the user's trainer
    assert "random_weights: true" in OmegaConf.to_yaml(cfg, resolve=True)  # what config_resolved.yaml records


@pytest.mark.parametrize("value", ["true", "yes", 1, 0, None])
def test_a_non_boolean_switch_is_refused_in_one_line(value):
    with pytest.raises(ConfigError, match=r"^random_weights=.*: expected true or false$"):
        checks.check_random_weights(value)
    with pytest.raises(ConfigError, match=r"^identity.random_weights=.*: expected true or false$"):
        build_identity("/nowhere/model_ir_se50.pth", random_weights=value)
    assert checks.check_random_weights(True) is True and checks.check_random_weights(False) is False


def test_every_weight_backed_component_carries_the_switch(tmp_path):
    for group, names in COMPONENTS.items():
        for name in names:
            cfg = compose_config([f"{group}={name}", f"paths.output_dir={tmp_path}", "random_weights=true"])
            assert cfg[group].random_weights is True, f"{group}={name}"  # ${random_weights}: false by default


# ------------------------------------------------------------------------------------------- one WARNING, no file
def test_a_random_build_logs_one_warning_and_reads_no_file(caplog, offline_everything):
    with caplog.at_level(logging.WARNING):
        enc = build_identity("/nowhere/model_ir_se50.pth", random_weights=True)
    assert enc is not None and n_params(enc) == IRSE50_PARAMS
    lines = warnings_in(caplog)
    assert lines == [
        "random weights at the real shape of ArcFace IR-SE50 (model_ir_se50.pth): results are meaningless; "
        "for shape/memory/smoke checks only"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        gen = build_generator("/nowhere/g.pt", 32, style_dim=32, n_mlp=2, channel_multiplier=1, random_weights=True)
    assert gen.size == 32 and len(warnings_in(caplog)) == 1 and "g.pt (32 px" in warnings_in(caplog)[0]
    assert build_identity("/nowhere/x.pth", enabled=False, random_weights=True) is None


def test_random_builds_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    a = build_generator(None, 32, style_dim=32, n_mlp=2, channel_multiplier=1, random_weights=True)
    b = build_generator(None, 32, style_dim=32, n_mlp=2, channel_multiplier=1, random_weights=True)
    assert torch.equal(torch.rand(2), expected)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_without_the_switch_nothing_changes():
    with pytest.raises(UserError, match="identity encoder weights not found at '/nowhere/model_ir_se50.pth'"):
        build_identity("/nowhere/model_ir_se50.pth")
    with pytest.raises(UserError, match="no such file|not found|does not exist"):
        build_generator("/nowhere/g.pt", 32, style_dim=32, n_mlp=2, channel_multiplier=1)
    with pytest.raises(UserError, match=r"local path '/nowhere/adm-ffhq-256' does not exist"):
        UnconditionalPrior.from_pretrained("/nowhere/adm-ffhq-256")


# ------------------------------------------------------------------------------------------ the released shapes
def test_pixel_priors_at_their_released_shapes(offline_everything):
    for source in ("google/ddpm-ema-celebahq-256", "google/ddpm-ema-church-256"):
        prior = UnconditionalPrior.from_pretrained(source, device="meta", random_weights=True)
        assert n_params(prior.unet) == DDPM_256_PARAMS and prior.image_size == 256 and not prior.learned_variance
        assert prior.scheduler.config.beta_schedule == "linear" and prior.num_train_timesteps == 1000
    adm = UnconditionalPrior.from_pretrained("/any/weights/adm-ffhq-256/", device="meta", random_weights=True)
    assert n_params(adm.unet) == ADM_FFHQ_PARAMS and adm.image_size == 256 and adm.learned_variance
    assert adm.scheduler.config.variance_type == "learned_range"


def test_generators_identity_and_clip_at_their_released_shapes(offline_everything, caplog):
    sizes = {"ffhq": (1024, 18), "afhq_cat": (512, 16), "lsun_car": (512, 16)}
    for name, (size, n_latent) in sizes.items():
        node = compose_config([f"generator={name}", "random_weights=true"]).generator
        node = OmegaConf.to_container(node, resolve=True)
        node.pop("domain")
        gen = build_generator(**{k: v for k, v in node.items() if k != "_target_"}, device="meta")
        assert (gen.size, gen.n_latent, gen.style_dim) == (size, n_latent, 512), name
    assert n_params(build_generator(None, 1024, device="meta", random_weights=True)) == STYLEGAN2_F_1024_PARAMS
    assert n_params(build_identity(None, device="meta", random_weights=True)) == IRSE50_PARAMS
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        guide = CLIPGuide("ViT-B-32", "openai", device="meta", random_weights=True)
    assert n_params(guide.model) == CLIP_VIT_B32_PARAMS and guide.image_size == (224, 224)
    assert guide.name == "ViT-B-32/random-weights" and guide.model_cfg.get("quick_gelu") is True
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == warnings_in(caplog) and len(lines) == 1  # open_clip's own "initialized randomly" is not repeated


def test_an_unknown_source_is_one_line_never_a_guess():
    with pytest.raises(UserError, match=r"no released architecture is known for the pixel prior '/x/my-unet'"):
        UnconditionalPrior.from_pretrained("/x/my-unet", random_weights=True)
    with pytest.raises(UserError, match=r"Stable Diffusion prior 'someone/sd-xl'.*known: CompVis"):
        StableDiffusionPrior.from_pretrained("someone/sd-xl", random_weights=True)
    assert real_shapes.sd_prior_shape("./models/stable-diffusion-v1-4") is real_shapes.SD14
    with pytest.raises(UserError, match=r"clip.model_name='local-dir:/x'"):
        CLIPGuide("local-dir:/x", None, random_weights=True)


def test_stable_diffusion_at_its_released_shape_on_meta(offline_everything):
    sd = StableDiffusionPrior.from_pretrained("CompVis/stable-diffusion-v1-4", device="meta", random_weights=True)
    assert {k: n_params(getattr(sd, k)) for k in SD14_PARAMS} == SD14_PARAMS
    assert sd.image_size == 512 and sd.tokenizer.model_max_length == 77 and sd.num_train_timesteps == 1000
    v15 = StableDiffusionPrior.from_pretrained(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", device="meta", random_weights=True
    )
    assert n_params(v15.unet) == SD14_PARAMS["unet"]


# ------------------------------------------------------------------------------------------------- start-up
def test_start_up_needs_no_weight_file_with_the_switch_and_still_names_it_without(tmp_path):
    def cfg(*extra):
        return compose_config(["method=asyrp", "prior=adm_ffhq", f"paths.output_dir={tmp_path}", *extra])

    with pytest.raises(UserError, match=r"^prior\.source=\S*adm-ffhq-256: no such file or folder$"):
        checks.check_component_files(cfg(), ["prior"])
    checks.check_component_files(cfg("random_weights=true"), ["prior"])
    with pytest.raises(UserError, match=r"^prior\.source=/x/mine: .*no released architecture") as err:
        checks.check_component_files(cfg("random_weights=true", "prior.source=/x/mine"), ["prior"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^prior\.random_weights='yes': expected true or false"):
        checks.check_component_files(cfg("prior.random_weights=yes"), ["prior"])


def test_describe_prior_reads_the_released_shape_with_the_switch(tmp_path):
    node = compose_config(["prior=adm_ffhq", f"paths.output_dir={tmp_path}"]).prior
    assert describe_prior(node) is None  # no file: unknown until the loader reports it
    node.random_weights = True
    shape = describe_prior(node)
    assert shape.sample_size == 256 and shape.unet_config["out_channels"] == 6 and shape.num_train_timesteps == 1000
    assert n_params(shape.meta_unet()) == ADM_FFHQ_PARAMS
    sd = compose_config(["prior=sd14", "random_weights=true", f"paths.output_dir={tmp_path}"]).prior
    assert describe_prior(sd).sample_size == 64 and describe_prior(sd).in_channels == 4


# --------------------------------------------------------------------------------- real CPU builds (slow)
@pytest.mark.slow
def test_pixel_priors_run_at_real_size_on_cpu(offline_everything):
    for source, params in (("google/ddpm-ema-celebahq-256", DDPM_256_PARAMS), ("adm-ffhq-256", ADM_FFHQ_PARAMS)):
        prior = UnconditionalPrior.from_pretrained(source, random_weights=True)
        again = UnconditionalPrior.from_pretrained(source, random_weights=True)
        assert n_params(prior.unet) == params and prior.dtype is torch.float32
        assert all(torch.equal(a, b) for a, b in zip(prior.unet.parameters(), again.unet.parameters(), strict=True))
        with torch.no_grad():
            eps = prior.predict_eps(torch.randn(1, 3, 256, 256), 500)
        assert eps.shape == (1, 3, 256, 256) and torch.isfinite(eps).all()


@pytest.mark.slow
def test_generator_identity_and_clip_run_at_real_size_on_cpu(offline_everything):
    with torch.no_grad():
        gen = build_generator(None, 1024, random_weights=True)
        assert n_params(gen) == STYLEGAN2_F_1024_PARAMS
        assert gen(torch.randn(1, gen.n_latent, 512)).shape == (1, 3, 1024, 1024)
        car = build_generator(None, 512, crop=[64, 64, 0, 0], random_weights=True)
        assert car(torch.randn(1, car.n_latent, 512)).shape == (1, 3, 384, 512)
        enc = build_identity(None, random_weights=True)
        assert enc(torch.rand(2, 3, 256, 256) * 2 - 1).shape == (2, 512)
        guide = CLIPGuide("ViT-B-32", "openai", random_weights=True)
        assert n_params(guide.model) == CLIP_VIT_B32_PARAMS
        assert guide.encode_image(torch.rand(2, 3, 256, 256) * 2 - 1).shape == (2, 512)
        assert guide.encode_text(["a photo of a face"]).shape == (1, 512)


@pytest.mark.slow
def test_stable_diffusion_runs_at_real_size_on_cpu(offline_everything):
    sd = StableDiffusionPrior.from_pretrained(random_weights=True)  # fp32 on CPU: ≈ 4.3 GB
    assert {k: n_params(getattr(sd, k)) for k in SD14_PARAMS} == SD14_PARAMS
    with torch.no_grad():
        cond = sd.encode_text(["a photo of a person with white hair"])
        eps = sd.predict_eps(torch.randn(1, 4, 64, 64), 500, cond=cond)
    assert cond.shape == (1, 77, 768) and eps.shape == (1, 4, 64, 64) and torch.isfinite(eps).all()
