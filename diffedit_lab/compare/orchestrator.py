"""Every editing method on the same images — an orchestrator ABOVE the runner, not a method: each entry is a
nested ``run`` of the runner (composed, then checked by ``prepare`` before the first entry starts), then one table.

Generator mode (``method.folder=null``): the source entry (SDD) runs first; the images it edited (SDD:
``edit/original/*.png``, the generator's test images) become ``data=folder`` for every other entry, so SDEdit,
DDIB, Rectifier … edit exactly the images SDD edits. Folder mode (``method.folder=<photos>``): every entry reads
the photos (SDD inverts them into W+). Each entry's run dir is ``<run>/methods/<entry>/``; trained weights given by
path are reused (``entries.<e>.weights``), anything else is trained there. How a method is driven is declared by
its entry (:class:`.config.EntryConfig`: the keys capping its image count, its stages with and without weights,
its training stages, the size it reads the sources at), never special-cased here. The table
(``comparison.csv``/``.md``), the figure and ``report.md`` are written by :mod:`.report`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from diffedit_lab.compare import report
from diffedit_lab.compare.config import CompareConfig
from diffedit_lab.methods.preflight import Preflight
from diffedit_lab.methods.stage import Stage, StageContext
from diffedit_lab.run import prepare, run
from diffedit_lab.utils.config import compose_nested
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.schema import validate

log = logging.getLogger(__name__)


def _quote(text: str) -> str:
    """A Hydra override value for free text."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Comparison:
    """The runner's task protocol (``Config``, ``STAGES``, ``check_stages``, ``run_stage``) without being a
    LightningModule: it trains nothing itself; its one stage runs the entries through :func:`diffedit_lab.run.run`."""

    Config = CompareConfig
    STAGES = (Stage("compare"),)

    def __init__(self, cfg: CompareConfig) -> None:
        self.cfg = cfg if isinstance(cfg, CompareConfig) else validate(CompareConfig, cfg, "method")

    @classmethod
    def stage_needs(cls, stage: Stage, cfg: CompareConfig) -> tuple[str, ...]:
        return ()  # the entries' components are checked by their own prepare()

    @classmethod
    def check_stages(cls, cfg: CompareConfig, pre: Preflight) -> list[Path]:
        cls.check_compare(cfg, pre)
        return []  # the entries move their own finished outputs aside (overwrite=true is passed on)

    def run_stage(self, stage: Stage, ctx: StageContext) -> dict[str, float]:
        log.info("stage %s", stage.name)
        return self.stage_compare(ctx)

    @classmethod
    def entry_overrides(
        cls, cfg: CompareConfig, name: str, run_dir: Path, sources: Path | None, overwrite: bool = False,
        resolution: int | None = None,
    ) -> list[str]:  # fmt: skip
        c, p, entry = cfg, cfg.prompt, cfg.entries[name]
        out = [f"method={entry.method}", f"paths.output_dir={run_dir / 'methods' / name}", "logger=none"]
        if p.name and p.name != "custom":
            out.append(f"prompt={p.name}")
        out += [f"prompt.text={_quote(p.text)}", f"prompt.source_text={_quote(p.source_text)}"]
        out += [f"{key}={c.num_images}" for key in entry.max_images_keys]
        if sources is not None:
            res = entry.resolution or resolution or (c.source_resolution if c.folder else report.image_size(sources))
            out += ["data=folder", f"data.root={sources}", f"data.resolution={res}", f"data.max_images={c.num_images}"]
        if entry.weights:
            out.append(f"{entry.weights_key}={entry.weights}")
        stages = entry.weights_stages if entry.weights else entry.stages
        if stages:
            out.append(f"stage=[{','.join(stages)}]")
        if overwrite:
            out.append("overwrite=true")
        return [*out, *c.common, *entry.overrides]

    @classmethod
    def entry_order(cls, cfg: CompareConfig) -> list[str]:
        order = list(cfg.entries)
        if not cfg.folder:  # the source entry first: its test images are everyone's sources
            order.remove(cfg.source_entry)
            order.insert(0, cfg.source_entry)
        return order

    @classmethod
    def check_compare(cls, cfg: CompareConfig, pre: Preflight) -> None:
        """Every entry composed and checked as its own run would be (its method exists, its config validates, its
        weight files exist and are whole, its stages' checks pass) before the first entry runs. In generator mode
        the other entries' images come from the source entry: their data is checked when that entry has run."""
        folder = Path(cfg.folder).expanduser() if cfg.folder else None
        for name in cls.entry_order(cfg):
            produced = folder is None and name != cfg.source_entry
            sources = pre.run_dir / "methods" / cfg.source_entry / "edit" if produced else folder
            overrides = cls.entry_overrides(cfg, name, pre.run_dir, sources, pre.overwrite, cfg.source_resolution)
            try:
                plan = prepare(compose_nested(overrides), check_data=not produced)
                cls.check_entry_stages(cfg, name, plan.cls)
            except UserError as exc:
                raise UserError(f"compare entry '{name}' (method={cfg.entries[name].method}): {exc}") from None
            except Exception as exc:  # Hydra's composition errors (an unknown method, a bad override)
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UserError(f"compare entry '{name}' (method={cfg.entries[name].method}): {first}") from None

    @staticmethod
    def check_entry_stages(cfg: CompareConfig, name: str, method_cls: type) -> None:
        """The entry's stage lists name stages of its method: ``weights_stages`` (run only with weights, so
        otherwise never composed) and ``train_stages`` (whose time is the training cost: a typo made it 0)."""
        valid = [s.name for s in method_cls.STAGES]
        entry = cfg.entries[name]
        for key in ("weights_stages", "train_stages"):
            wrong = [s for s in getattr(entry, key) or [] if s not in valid]
            if wrong:
                raise UserError(
                    f"method.entries.{name}.{key}={getattr(entry, key)}: '{wrong[0]}' is not a stage of "
                    f"{entry.method}; its stages are {valid}"
                )

    def run_entry(self, name: str, ctx: StageContext, sources: Path | None) -> dict[str, float]:
        entry = self.cfg.entries[name]
        overrides = self.entry_overrides(self.cfg, name, ctx.run_dir, sources, ctx.overwrite)
        log.info("compare: %s ← python -m diffedit_lab %s", name, " ".join(overrides))
        try:
            result = run(compose_nested(overrides))
        except UserError as exc:
            raise UserError(f"compare entry '{name}' (method={entry.method}): {exc}") from None
        return result.metrics

    def stage_compare(self, ctx: StageContext) -> dict[str, float]:
        c = self.cfg
        sources: Path | None = Path(c.folder).expanduser() if c.folder else None
        rows = []
        for name in self.entry_order(c):
            entry = c.entries[name]
            metrics = self.run_entry(name, ctx, sources)
            run_dir = ctx.run_dir / "methods" / name
            if sources is None and name == c.source_entry:
                sources = report.input_dir(run_dir)
            rows.append(report.row(name, entry.method, metrics, run_dir, entry.train_stages))
        table = report.write_table(rows, ctx.run_dir)
        figure = report.write_figure(rows, ctx.run_dir, c.figure_images)
        report.write_report(rows, ctx.run_dir, figure, c.prompt.text)
        hashes = {r["inputs_sha256"] for r in rows}
        if len(hashes) != 1:
            log.warning("compare: the entries saw different inputs (%s); see the inputs_sha256 column", hashes)
        columns = ", ".join(self.entry_order(c))
        ctx.log_image("compare/figure", figure, f"rows: source images; columns: source, {columns}")
        ctx.log_table("compare/per_image", report.image_rows(rows))
        ctx.log_table("compare/methods", report.entry_rows(rows))
        flat = {f"compare/{r['entry']}/{k}": v for r in rows for k, v in r.items() if isinstance(v, float)}
        ctx.write_metrics(flat)
        (ctx.run_dir / "comparison.json").write_text(json.dumps(rows, indent=2, default=str))
        log.info("compare: %s", table)
        return flat
