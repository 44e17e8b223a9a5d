"""Per-image latency of every method's pipeline (``edit.pipeline.<method>``), for free: each method found with a
``conf/method/<m>/tiny.yaml`` variant is composed at that size and its :class:`~diffedit_lab.pipelines.EditPipeline`
(untrained weights: the cost of an edit does not depend on them) is timed on one batch — the same ``edit_batch``
its edit stage and the Python API run. A new method with a tiny variant gets its entry without bench code."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from experiments.bench.harness import SEED, Bench

log = logging.getLogger(__name__)


def tiny_methods() -> list[str]:
    """The methods that ship a tiny variant (``method=<m>/tiny``), in name order."""
    from diffedit_lab.utils.config import CONF_DIR

    root = CONF_DIR / "method"
    return sorted(p.parent.name for p in root.glob("*/tiny.yaml"))


def _inputs(cfg) -> dict[str, Any]:
    """One batch of 2 like the method's own data: seeds when it edits latent codes (SDD), else images at the data's
    resolution in [-1, 1]."""
    if "latent" in str(cfg.data.get("_target_", "")).lower():
        return {"seeds": [0, 1]}
    size = cfg.data.get("resolution") or 32
    size = size if isinstance(size, int) else int(size[0])
    return {"images": torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(SEED)) * 2 - 1}


def bench_pipelines(
    bench: Bench, work_dir: Path, methods: list[str] | None = None, overrides: list[str] = ()
) -> dict[str, Any]:
    """Time ``pipe(**inputs)`` for each method (``bench.repeats`` calls after ``bench.warmup``); returns the
    methods timed and those skipped with the reason. ``overrides``: extra config overrides (e.g. a
    ``hydra.searchpath`` holding a method that lives outside the package)."""
    from diffedit_lab.pipelines import pipeline_from_config
    from diffedit_lab.utils.config import compose_config

    done, skipped = [], {}
    for name in methods or tiny_methods():
        try:
            paths = [f"paths.output_dir={work_dir / name}", f"paths.cache_dir={work_dir / 'cache'}"]
            cfg = compose_config([*overrides, f"method={name}/tiny", "logger=none", *paths])
            pipe = pipeline_from_config(cfg.method, trained=False).to("cpu")
            inputs = _inputs(cfg)
            bench.measure("tiny", torch.device("cpu"), {f"edit.pipeline.{name}": (lambda p=pipe, x=inputs: p(**x),
                          {"batch": 2, "inputs": sorted(inputs)})})  # fmt: skip
            done.append(name)
        except Exception as exc:  # noqa: BLE001 - one method failing leaves the others' numbers
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("edit.pipeline.%s skipped: %s", name, skipped[name])
    return {"methods": done, "skipped": skipped}
