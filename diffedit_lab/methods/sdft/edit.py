"""SDFT's ``edit`` stage: text-guided manipulation with Asyrp on the fine-tuned model (paper 002, §4.3 / App. E,
Tab. 2).

For each prompt of ``edit.prompts`` (smiling, sad, angry, young, old) an Asyrp method (``method=asyrp``, or the
variant named by ``edit.method``) is composed from the config tree with that prompt's preset and ``edit.overrides``,
given SDFT's EMA U-Net as its prior (the object itself: nothing is reloaded), and run fit → edit → eval on SDFT's
target images in ``<run>/edit/<prompt>/`` — trained on the first ``fit.num_images`` of the train split, scored on the
rest (:class:`CarvedSplits`), with its own trainer settings (:func:`sub_context`). Each prompt's metrics land as
``edit/<prompt>/<metric>``; their mean over the prompts as ``edit/<metric>`` (what Tab. 2 reports: directional CLIP
and identity). ``edit/table.md`` puts the paper's row for this training method and dataset (``edit.paper_dataset``)
beside ours.
"""

from __future__ import annotations

import dataclasses
import logging
from statistics import mean

from omegaconf import OmegaConf

from diffedit_lab.data.base import ItemRange
from diffedit_lab.methods.sdft import paper
from diffedit_lab.methods.stage import StageContext, run_stages
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.loggers import nested

log = logging.getLogger(__name__)

TABLE_METRICS = ("clip_dir", "identity")


def asyrp_node(method: str, prompt: str, overrides: list[str], random_weights: bool = False):
    """The ``method`` node of ``method=<method> prompt=<prompt> <overrides>`` (inside a running app or not);
    ``random_weights``: SDFT's own switch, passed on to the nested components (CLIP, ArcFace)."""
    from diffedit_lab.utils.config import compose_nested

    flag = [f"random_weights={str(bool(random_weights)).lower()}"]
    try:
        return compose_nested([f"method={method}", f"prompt={prompt}", "logger=none", *flag, *overrides]).method
    except Exception as exc:  # Hydra's composition errors: one line naming the prompt
        raise UserError(f"method.edit: cannot compose method={method} prompt={prompt}: {exc}") from None


class CarvedSplits:
    """The target data as Asyrp sees it: ``train`` = the first ``n_train`` images of the target's train split,
    ``test`` = the rest of it — so the images Asyrp is scored on were never trained on, even when the target
    datamodule's splits are one flat folder (the paper: "the provided results are not included in the training
    datasets for Asyrp")."""

    def __init__(self, datamodule, n_train: int) -> None:
        if datamodule is None or not hasattr(datamodule, "dataset"):
            raise UserError("SDFT edit needs the target images: an image dataset (data=metfaces, data.root=…)")
        self.datamodule, self.n_train = datamodule, int(n_train)

    def dataset(self, split: str):
        base = self.datamodule.dataset("train")
        if len(base) <= self.n_train:
            raise UserError(
                f"SDFT edit: the target train split has {len(base)} images, Asyrp trains on {self.n_train}: none left "
                "to evaluate on (lower it with \"method.edit.overrides=['method.fit.num_images=N']\")"
            )
        if split == "train":
            return ItemRange(base, 0, self.n_train)
        if split == "test":
            return ItemRange(base, self.n_train)
        raise UserError(f"SDFT edit: no split '{split}' (train, test)")


def sub_context(ctx: StageContext, run_dir, datamodule) -> StageContext:
    """The context of one nested Asyrp run: its own run dir and data view; Asyrp's own trainer settings (it steps
    its optimiser itself, once per timestep: no accumulation or clipping; fp32 — its P_t at t ≈ T amplifies the
    U-Net's error by 1/√ᾱ_t); SDFT's loggers nested under ``edit/<prompt>/`` (its curves, grids and tables, where
    a logger can nest; the aggregated ``edit/*`` metrics reach SDFT's anyway); resumes its own
    ``checkpoints/fit`` with ``ckpt_path=last`` and never an explicit SDFT checkpoint."""
    from omegaconf import open_dict

    trainer_cfg = ctx.trainer_cfg.copy()
    with open_dict(trainer_cfg):
        trainer_cfg.accumulate_grad_batches = 1
        trainer_cfg.gradient_clip_val = None
        trainer_cfg.precision = "32-true"
    run_dir.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(
        ctx,
        trainer_cfg=trainer_cfg,
        datamodule=datamodule,
        run_dir=run_dir,
        loggers=nested(ctx.loggers, f"edit/{run_dir.name}"),
        ckpt_path="last" if ctx.ckpt_path else None,
        first_train_stage=None,
        metrics={},
        trainer=None,
    )


def check(cfg, pre) -> list:
    """Start-up checks of stage ``edit`` (before SDFT trains): every prompt's Asyrp config composes and validates,
    fits SDFT's prior (its ``t_0`` within T, the target images at its size), and its run dir ``edit/<prompt>/``
    holds no finished Asyrp module it would replace (returned for ``overwrite=true`` to move aside)."""
    from diffedit_lab.methods.asyrp import AsyrpModule
    from diffedit_lab.methods.asyrp.config import AsyrpConfig
    from diffedit_lab.methods.preflight import Preflight, protect_outputs
    from diffedit_lab.utils.schema import validate

    e = cfg.edit
    doomed = []
    for name in e.prompts:
        node = asyrp_node(e.method, name, list(e.overrides), _random(cfg))
        node = OmegaConf.to_container(node, resolve=True)
        node["prior"] = {"_target_": "diffedit_lab.diffusion.priors.UnconditionalPrior"}  # SDFT's EMA is used
        asyrp = validate(AsyrpConfig, node, "method.edit (Asyrp)")
        if pre.datamodule is not None and hasattr(pre.datamodule, "dataset"):  # what CarvedSplits will need
            n_target = len(pre.datamodule.dataset("train"))
            if n_target <= asyrp.fit.num_images:
                raise UserError(
                    f"SDFT edit: the target train split has {n_target} images, Asyrp trains on "
                    f"{asyrp.fit.num_images}: none left to evaluate on (lower it with "
                    "\"method.edit.overrides=['method.fit.num_images=N']\")"
                )
        sub = Preflight(pre.run_dir / "edit" / name, list(AsyrpModule.STAGES), AsyrpModule.STAGES, pre.datamodule,
                        "last" if pre.ckpt_path else None, pre.overwrite, pre.cache)  # fmt: skip
        AsyrpModule.check_prior(asyrp, sub, pre.prior_shape(cfg.source))
        doomed += protect_outputs(sub)
    return doomed


def _random(cfg) -> bool:
    return bool((cfg.source or {}).get("random_weights", False))


def paper_row(module) -> str | None:
    """The Tab. 2 row this run reproduces: Naive Fine-Tune (λ = λ' = 0, source init), SDFT, or none (scratch)."""
    if module.cfg.init == "random":
        return None
    return "Ours (SDFT)" if module.cfg.needs_teacher else "Naive Fine-Tune"


def run_edit(module, ctx: StageContext) -> dict[str, float]:
    from diffedit_lab.methods.asyrp import AsyrpModule

    e = module.cfg.edit
    module.ensure_trained(ctx)
    prior = module.sampling_prior(ema=True)
    metrics: dict[str, float] = {}
    per_prompt: dict[str, dict[str, float]] = {}
    for name in e.prompts:
        node = asyrp_node(e.method, name, list(e.overrides), _random(module.cfg))
        asyrp = AsyrpModule.with_prior(node, prior)
        module.editors[name] = asyrp  # what tests and notebooks inspect
        sub = sub_context(ctx, ctx.run_dir / "edit" / name, CarvedSplits(ctx.datamodule, asyrp.cfg.fit.num_images))
        log.info("SDFT edit: Asyrp '%s' on the fine-tuned EMA → %s", name, sub.run_dir)
        asyrp.to(module.device)
        run_stages(asyrp, asyrp.STAGES, sub)  # the runner's stage walk, on SDFT's EMA in memory
        values = {k.removeprefix("eval/"): v for k, v in sub.metrics.items() if k.startswith("eval/")}
        per_prompt[name] = values
        metrics |= {f"edit/{name}/{k}": v for k, v in values.items()}
    for key in sorted({k for v in per_prompt.values() for k in v}):
        got = [v[key] for v in per_prompt.values() if key in v]
        if len(got) == len(per_prompt):
            metrics[f"edit/{key}"] = mean(got)
    write_table(module, ctx, per_prompt, metrics)
    ctx.write_metrics(metrics)
    return metrics


def write_table(module, ctx: StageContext, per_prompt: dict[str, dict[str, float]], metrics: dict[str, float]):
    """``edit/table.md``: one row per prompt, the mean, and the paper's mean for this training method/dataset."""
    e = module.cfg.edit
    row = paper_row(module)
    published = {k.removeprefix("edit/"): v for k, v in paper.published(e.paper_dataset, row).items()}
    lines = ["| prompt | " + " | ".join(TABLE_METRICS) + " |", "|---|" + "---|" * len(TABLE_METRICS)]

    def cells(values: dict[str, float]) -> str:
        return " | ".join(f"{values[m]:.4f}" if m in values else "" for m in TABLE_METRICS)

    for name, values in per_prompt.items():
        lines.append(f"| {name} | {cells(values)} |")
    lines.append(f"| **mean (ours)** | {cells({k.removeprefix('edit/'): v for k, v in metrics.items()})} |")
    if published:
        lines.append(f"| paper: {row}, {e.paper_dataset} | {cells(published)} |")
    path = ctx.run_dir / "edit" / "table.md"
    path.write_text("\n".join(lines) + "\n")
    log.info("SDFT edit (Asyrp):\n%s", path.read_text())
