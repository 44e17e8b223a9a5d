"""A run's group and name for dashboards: a multirun's jobs share a group of their own (the task and the sweep's
folder) and are named after the overrides they sweep (``lr=0.001``); a plain run is named after its task and start."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SWEEP_MARKS = (",", "range(", "choice(", "glob(", "interval(", "tag(")


def swept_keys(argv: list[str], sweeper_params: dict | None = None) -> set[str]:
    """The keys a sweep varies: command-line overrides with several values (``a=1,2``, ``range(…)``, …) and the
    sweeper's ``params`` (Optuna)."""
    keys = set(sweeper_params or {})
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            if any(m in value for m in SWEEP_MARKS):
                keys.add(key.lstrip("+~"))
    return keys


def short_names(overrides: list[str], keys: set[str] | None = None) -> str:
    """``method.optim.lr=0.001 seed=1`` → ``lr=0.001 seed=1`` (the last key segment, the full key if two clash);
    only ``keys`` when given and any is present."""
    pairs = [o.lstrip("+~").split("=", 1) for o in overrides if "=" in o]
    if keys:
        chosen = [p for p in pairs if p[0] in keys]
        pairs = chosen or pairs
    tails = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    return " ".join(f"{t if tails.count(t) == 1 else k}={v}" for (k, v), t in zip(pairs, tails))


def run_identity(cfg: Any) -> tuple[str, str]:
    """(group, name) of the current Hydra job; outside Hydra (tests, notebooks): the task and the run dir's name."""
    task = str(cfg.get("task_name") or "run")
    run_dir = Path(str(cfg.paths.output_dir))
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            if hc.mode == RunMode.MULTIRUN:
                params = hc.sweeper.get("params") if hasattr(hc.sweeper, "get") else None
                keys = swept_keys(sys.argv[1:], dict(params) if params else None)
                name = short_names(list(hc.overrides.task), keys) or f"job{hc.job.num}"
                return f"{task}-sweep-{Path(hc.sweep.dir).name}", name
    except (ImportError, ValueError):
        pass
    return task, f"{task}-{run_dir.name}"
