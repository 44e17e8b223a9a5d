"""SDFT's ``edit`` stage: text-guided manipulation with Asyrp on the fine-tuned model (paper 002, §4.3 / App. E,
Tab. 2).

For each prompt of ``edit.prompts`` (smiling, sad, angry, young, old) an Asyrp method (``method=asyrp``, or the
variant named by ``edit.method``) is composed from the config tree with that prompt's preset and ``edit.overrides``,
given SDFT's EMA U-Net as its prior (the object itself: nothing is reloaded), and run fit → edit → eval on SDFT's
own target datamodule in ``<run>/edit/<prompt>/``. Each prompt's metrics land as ``edit/<prompt>/<metric>``; their
mean over the prompts as ``edit/<metric>`` (what Tab. 2 reports: directional CLIP and identity). ``edit/table.md``
puts the paper's row for this training method and dataset (``edit.paper_dataset``) beside ours.
"""

from __future__ import annotations

import dataclasses
import logging
from statistics import mean

from diffedit_lab.methods.sdft import paper
from diffedit_lab.methods.stage import StageContext
from diffedit_lab.utils.errors import UserError

log = logging.getLogger(__name__)

TABLE_METRICS = ("clip_dir", "identity")


def asyrp_node(method: str, prompt: str, overrides: list[str]):
    """The ``method`` node of ``method=<method> prompt=<prompt> <overrides>`` (inside a running app or not)."""
    from diffedit_lab.methods.compare.module import compose

    try:
        return compose([f"method={method}", f"prompt={prompt}", "logger=none", *overrides]).method
    except Exception as exc:  # Hydra's composition errors: one line naming the prompt
        raise UserError(f"method.edit: cannot compose method={method} prompt={prompt}: {exc}") from None


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
        asyrp = AsyrpModule.with_prior(asyrp_node(e.method, name, list(e.overrides)), prior)
        module.editors[name] = asyrp  # what tests and notebooks inspect
        sub = dataclasses.replace(ctx, run_dir=ctx.run_dir / "edit" / name, metrics={}, trainer=None)
        sub.run_dir.mkdir(parents=True, exist_ok=True)
        log.info("SDFT edit: Asyrp '%s' on the fine-tuned EMA → %s", name, sub.run_dir)
        for stage in asyrp.STAGES:
            asyrp.to(module.device)
            asyrp.run_stage(stage, sub)
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
