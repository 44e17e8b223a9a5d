"""Editing from Python, without Hydra: one pipeline object per trained run (the diffusers habit).

    from diffedit_lab import load_pipeline
    pipe = load_pipeline("outputs/sdd/runs/2026-12-03_20-00-00")     # any method's run dir
    out = pipe(images)              # (B,3,H,W) in [-1, 1]; SDD also takes codes=… (W+) or seeds=[…]
    out.images, out.inputs, out.latency_ms_per_image, out.extras

:func:`load_pipeline` rebuilds the run's method from its ``config_resolved.yaml`` (validated like a CLI run), loads
the trained weights its edit needs through the same lookup and safe loader as the stages (``method.weights``, the
run dir's export, ``checkpoints/<stage>/last.ckpt``), and wraps it in an :class:`EditPipeline`. The pipeline calls
the method's ``edit_batch`` — the very function its edit stage runs — so a notebook edit equals the CLI's.

Which inference each method's pipeline runs (``EDIT_STAGE``): SDD ``edit`` (mapper + generator; photos through
the projector), Asyrp ``edit``, Rectifier ``apply`` (the trained editor), SDFT ``translate`` (SDEdit/EGSDE on the
EMA), SDEdit/DDIB ``edit``. A method with ``edit_batch`` and ``EDIT_STAGE`` gets a pipeline for free.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.timing import Stopwatch

log = logging.getLogger(__name__)


@dataclass
class EditOutput:
    """What a pipeline returns: the edited images, what was edited (the inputs at the method's resolution, or the
    images rendered from codes), the per-image latency of the call, and the method's other outputs."""

    images: torch.Tensor
    inputs: torch.Tensor
    latency_ms_per_image: float
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class EditPipeline:
    """A trained method, ready to edit: ``pipe(images)`` / ``pipe(codes=w)`` / ``pipe(seeds=[...])``."""

    def __init__(self, method: Any, run_dir: Path | None = None) -> None:
        self.method = method.eval()
        self.run_dir = run_dir
        self._calls = 0

    @property
    def name(self) -> str:
        return str(getattr(self.method.cfg, "name", type(self.method).__name__))

    def save_pretrained(self, folder: str | Path) -> Path:
        """A self-contained folder that :func:`load_pipeline` loads: the method's config (``config_resolved.yaml``,
        its ``method`` node, as validated) and the trained weights its edit needs, each under its stage's export name
        (copied as found in the run dir: an artifact, an older export or a checkpoint — the loaders tell them apart
        by content). Written to a temporary folder and renamed: never half-written."""
        import shutil

        from diffedit_lab.utils.io import atomic_dir
        from diffedit_lab.utils.schema import as_dict

        cls, cfg = type(self.method), self.method.cfg
        stages = cls.pipeline_stages(cfg)
        if stages and self.run_dir is None:
            raise UserError(f"save_pretrained: this {self.name} pipeline has no trained weights to save")
        files = {}
        for stage in stages:
            train = next(s for s in cls.STAGES if s.name == stage)
            name = train.outputs[0] if train.outputs else f"checkpoints/{stage}/last.ckpt"
            files[name] = cls.trained_file(cfg, self.run_dir, None, stage)

        def write(tmp: str) -> None:
            OmegaConf.save(OmegaConf.create({"method": as_dict(cfg)}), Path(tmp) / "config_resolved.yaml")
            for name, src in files.items():
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, Path(tmp) / name)

        return atomic_dir(folder, write)

    @property
    def prompt(self) -> str | None:
        p = getattr(self.method.cfg, "prompt", None)
        return p.text if p is not None else None

    @property
    def device(self) -> torch.device:
        return self.method.device

    def to(self, device: torch.device | str) -> EditPipeline:
        self.method.to(device)
        return self

    def __call__(
        self,
        images: torch.Tensor | None = None,
        *,
        codes: torch.Tensor | None = None,
        seeds: Sequence[int] | None = None,
        prompt: str | None = None,
        generator: torch.Generator | None = None,
    ) -> EditOutput:
        """Edit a batch. ``prompt``: the text a text-conditioned baseline (SDEdit, DDIB) edits toward; methods
        trained for one prompt (SDD, Asyrp, Rectifier) refuse another one rather than edit with the wrong model."""
        batch = self._batch(images, codes, seeds)
        method = self.method
        if prompt is not None and prompt != self.prompt:
            method = self._with_prompt(prompt)
        n = len(next(iter(batch.values())))
        batch["index"] = torch.arange(self._calls, self._calls + n)  # per-item seeds continue across calls
        with Stopwatch(method.device) as sw:
            out = method.edit_batch(batch, generator)
        self._calls += n
        keys = list(out)
        edited = out.get("edited", out.get("translated"))
        extras = {k: v for k, v in out.items() if k not in (keys[0], "edited", "translated")}
        return EditOutput(edited, out[keys[0]], sw.ms / n, extras)

    def _batch(self, images, codes, seeds) -> dict[str, Any]:
        given = [x is not None for x in (images, codes, seeds)]
        if sum(given) != 1:
            raise UserError("give exactly one of images=(B,3,H,W) in [-1, 1], codes=(B,layers,dim) or seeds=[…]")
        if images is not None:
            if images.ndim != 4 or images.shape[1] != 3:
                raise UserError(f"images must be (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
            return {"image": images.to(self.device)}
        if codes is not None:
            return {"w": codes.to(self.device)}
        return {"seed": torch.as_tensor(list(seeds))}

    def _with_prompt(self, prompt: str):
        cfg = self.method.cfg
        if not getattr(type(self.method), "ANY_PROMPT", False):
            raise UserError(
                f"{self.name} was trained for the prompt {self.prompt!r}: it cannot edit toward {prompt!r} "
                "(train a run with that prompt)"
            )
        edited = type(self.method)(dataclasses.replace(cfg, prompt=dataclasses.replace(cfg.prompt, text=prompt)))
        edited._frozen = self.method._frozen  # the same frozen networks, built once
        return edited.to(self.device).eval()


def load_pipeline(
    run_dir: str | Path,
    device: torch.device | str | None = None,
    overrides: dict[str, Any] | None = None,
) -> EditPipeline:
    """The pipeline of a finished run (see the module docstring). ``overrides``: method keys to change for
    inference, dotted (``{"edit.steps": 50}``), validated like the CLI's ``method.*`` overrides."""
    from diffedit_lab.checks import validate_method
    from diffedit_lab.run import method_class_of

    run_dir = Path(run_dir).expanduser()
    config = run_dir / "config_resolved.yaml"
    if not config.is_file():
        raise UserError(f"load_pipeline: no config_resolved.yaml in '{run_dir}' (give the run dir of a CLI run)")
    node = OmegaConf.load(config).method
    for key, value in (overrides or {}).items():
        OmegaConf.update(node, key, value, force_add=False)
    cls = method_class_of(node)
    if getattr(cls, "EDIT_STAGE", None) is None:
        raise UserError(f"load_pipeline: method {cls.__name__} has no edit to run from Python")
    cfg = validate_method(cls, node)
    method = cls(cfg)
    if device is not None:
        method.to(torch.device(device))
    elif torch.cuda.is_available():
        method.to(torch.device("cuda"))
    for stage in cls.pipeline_stages(cfg):
        path = cls.trained_file(cfg, run_dir, None, stage)
        method.load_trained(path, stage)
        method.mark_trained(stage)
        log.info("load_pipeline: %s weights from %s", stage, path)
    return EditPipeline(method, run_dir)


def pipeline_from_config(
    node: DictConfig | dict, run_dir: str | Path | None = None, trained: bool = True
) -> EditPipeline:
    """A pipeline from a composed ``method`` config (e.g. ``compose_config([...]).method``) and, when its edit
    needs trained weights, the run dir holding them. ``trained=False``: the trained parts keep their initial
    weights (timing and shape checks only — the bench's ``edit.pipeline.<method>`` entries — never for edits)."""
    from diffedit_lab.checks import validate_method
    from diffedit_lab.run import method_class_of

    node = node if isinstance(node, DictConfig) else OmegaConf.create(node)
    cls = method_class_of(node)
    cfg = validate_method(cls, node)
    method = cls(cfg)
    if not trained:
        log.warning("pipeline_from_config(trained=False): %s with untrained weights (timing only)", cls.__name__)
        for stage in cls.pipeline_stages(cfg):
            method.build_trained(stage)
        return EditPipeline(method, None)
    for stage in cls.pipeline_stages(cfg):
        if run_dir is None:
            raise UserError(f"{cls.__name__} needs its trained {stage} weights: give run_dir")
        method.load_trained(cls.trained_file(cfg, Path(run_dir), None, stage), stage)
    return EditPipeline(method, Path(run_dir) if run_dir else None)
