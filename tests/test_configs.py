"""Every config group option and every preset composes and resolves; the CLI prints them."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONF, ROOT, run_cli

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
    target = container["method"]["_target_"]  # a method, or the comparison (an orchestrator above the runner)
    assert target.startswith("diffedit_lab.methods.") or target == "diffedit_lab.compare.Comparison"
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


# --- every preset against its method's schema; defaults stated once (the YAML) ---------------------------------


def _sweep_first_job(name: str) -> list[str]:
    """The overrides of a multirun preset's first job (``hydra.sweeper.params``: each parameter's first value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(OmegaConf.load(CONF / "experiment" / f"{name}.yaml"), "hydra.sweeper.params") or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [f"{o.get_key_element()}={next(o.sweep_string_iterator())}" for o in parsed]


def _presets() -> list:
    """(id, overrides) for every experiment (a multirun one as its first job) and every file under
    conf/method/<m>/: variants (``method=<m>/tiny``), per-prompt presets (``method=<m> prompt=<name>``, with a
    generator of the prompt's domain) and option groups (``+method/<m>/<group>@<package>=<name>``)."""
    cases = []
    for name in options("experiment"):
        first = _sweep_first_job(name)
        cases.append(pytest.param([f"experiment={name}", *first], id=f"experiment={name}" + (" (job 0)" * bool(first))))
    generator_of = {OmegaConf.load(p).get("domain"): p.stem for p in sorted((CONF / "generator").glob("*.yaml"))}
    for path in sorted((CONF / "method").glob("*/**/*.yaml")):
        rel = path.relative_to(CONF / "method").with_suffix("")
        method, group = rel.parts[0], rel.parts[1:-1]
        if not group:
            overrides = [f"method={rel.as_posix()}"]
        elif group == ("prompt",):
            domain = OmegaConf.load(CONF / "prompt" / path.name).domain  # the preset is picked by this prompt
            overrides = [f"method={method}", f"prompt={rel.name}"] + (
                [f"generator={generator_of[domain]}"] if domain in generator_of and method == "sdd" else []
            )
        else:  # an option group of the method, placed where its `# @package` header says
            header = path.read_text().splitlines()[0]
            assert header.startswith("# @package "), f"{path}: expected a '# @package <node>' first line"
            package = header.removeprefix("# @package ").strip()
            overrides = [f"method={method}", f"+method/{method}/{'/'.join(group)}@{package}={rel.name}"]
        cases.append(pytest.param(overrides, id=f"method/{rel.as_posix()}"))
    return cases


@pytest.mark.parametrize("overrides", _presets())
def test_every_preset_validates_against_its_method_schema(compose, overrides):
    """Each experiment and method variant is a valid run of its method: the schema accepts every value (types,
    ranges, choices, cross-field rules) and finds every key it requires. Nothing is built."""
    from diffedit_lab.checks import validate_method
    from diffedit_lab.run import method_class_of

    cfg = compose(*overrides, tiny=False)
    cls = method_class_of(cfg.method)
    assert dataclasses.is_dataclass(validate_method(cls, cfg.method)), cls


def _stated_in_both(schema: type, node: dict, key: str) -> list[str]:
    """The keys ``node`` (a composed method YAML) sets whose ``schema`` field also carries a default.

    Only the fields of nested sections (``X`` or ``X | None``) are followed; the item schema of a mapping or a list
    (compare's ``entries: dict[str, EntryConfig]``) keeps its defaults: they serve the entries a user adds, and the
    YAML's entries are data, not defaults."""
    hints, found = typing.get_type_hints(schema), []
    for f in dataclasses.fields(schema):
        name = f.metadata.get("key", f.name)
        if name not in node:
            continue  # a default the YAML does not restate: stated once
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            found.append(f"{key}.{name}")
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
        if dataclasses.is_dataclass(tp) and isinstance(node[name], dict):
            found += _stated_in_both(tp, node[name], f"{key}.{name}")
    return found


TOY_SEARCH = f"hydra.searchpath=[file://{ROOT / 'tests' / 'toy' / 'conf'}]"  # tests/test_new_method.py's method


@pytest.mark.parametrize("method", [*options("method"), "toy"])
def test_defaults_are_stated_once_in_the_yaml_not_the_schema(compose, method):
    """conf/method/<m>.yaml is the one place a default lives (what ``--cfg job`` prints and overrides change); the
    schema types and bounds each key but states no default for one the YAML sets, so the two cannot disagree
    (they did: SDD's fit.steps was 1000 in the schema, 4000 in the YAML)."""
    from diffedit_lab.run import method_class_of

    cfg = compose(f"method={method}", *([TOY_SEARCH] if method == "toy" else []), tiny=False)
    node = OmegaConf.to_container(cfg.method, resolve=False)
    twice = _stated_in_both(method_class_of(cfg.method).Config, node, "method")
    assert not twice, f"defaults stated in both conf/method/{method}.yaml and the schema (drop the schema's): {twice}"
