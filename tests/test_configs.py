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
    if group in ("experiment", "debug", "hparams_search", "method"):
        return  # presets: checked by running them (tests/test_run.py, tests/test_sweeps.py)
    # the chosen option is what was composed: its literal values sit at its group's place
    source = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=False)
    for key, value in source.items():
        if key == "defaults" or isinstance(value, dict | list) or "${" in str(value):
            continue
        assert cfg[group][key] == value, (group, option, key)


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
    lines = {line.split(":")[0]: line for line in out.stdout.splitlines() if ": " in line}
    for group in ("method", "data", "prior", "generator", "prompt", "trainer", "logger", "experiment"):
        listed = [o.strip() for o in lines[group].split(":", 1)[1].split(",")]
        assert set(options(group)) <= set(listed), (group, listed)
    assert {"demo", "tiny"} <= {o.strip() for o in lines["method/sdd"].split(":", 1)[1].split(",")}


def test_cli_cfg_job_prints_resolved_method_config():
    out = run_cli("method=sdd", "prompt=smiling", "--cfg", "job", "--resolve")
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.method.prompt.text == "smiling face"
    assert cfg.method.optim.lr == 0.005
    assert cfg.method.mapper.levels == {"coarse": False, "medium": True, "fine": False}  # SDD's smiling preset


def test_prompt_preset_brings_sdd_settings_and_method_keys_override_them(compose):
    cfg = compose("prompt=white_hair", tiny=False)
    assert cfg.method.selection.rule == "fixed_800" and cfg.method.prompt.text == "white hair"
    cfg = compose("prompt=white_hair", "method.selection.rule=max", "method.fit.steps=7", tiny=False)
    assert cfg.method.selection.rule == "max" and cfg.method.fit.steps == 7
    # free text keeps the preset's (or the method's) training settings
    cfg = compose("prompt.text=a face with freckles", tiny=False)
    assert cfg.method.prompt.text == "a face with freckles" and cfg.method.fit.steps == 4000
