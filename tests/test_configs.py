"""Every config group option and every preset composes and resolves; the CLI prints them."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONF, run_cli

GROUPS = [
    "method",
    "data",
    "prior",
    "generator",
    "clip",
    "identity",
    "prompt",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "debug",
    "experiment",
    "hparams_search",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(compose, group, option):
    cfg = compose(f"{group}={option}", tiny=False)
    # hydra-only interpolations (hydra:...) are absent under compose; everything else must resolve
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container["method"]["_target_"].startswith("diffedit_lab.methods.")
    assert container[group if group not in ("experiment", "debug", "hparams_search") else "method"] is not None


def test_groups_have_options():
    for group in GROUPS:
        assert options(group), f"conf/{group} is empty"
    assert len(options("prompt")) >= 12


def test_free_text_prompt(compose):
    cfg = compose("prompt.text=a face with freckles")
    assert cfg.method.prompt.text == "a face with freckles"


def test_misspelled_key_fails_loudly(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose("method.selection.rulez=max")


def test_cli_help_lists_groups():
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for group in ("method", "data", "prior", "generator", "prompt", "trainer", "logger", "experiment"):
        assert f"{group}:" in out.stdout or f"{group}/" in out.stdout or group in out.stdout


def test_cli_cfg_job_prints_resolved_method_config():
    out = run_cli("method=sdd", "prompt=smiling", "--cfg", "job", "--resolve")
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.method.prompt.text == "smiling face"
    assert cfg.method.optim.lr == 0.005
