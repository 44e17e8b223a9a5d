"""Hydra callbacks: gather the metrics of every job of a multirun into one comparison table."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class CollectMetrics(Callback):
    """At the end of a multirun, read ``<sweep dir>/<job>/metrics.json`` of every job and write
    ``comparison.csv`` + ``comparison.md`` in the sweep dir: one row per job, its overrides and ``keys``."""

    def __init__(self, keys: list[str] | None = None, filename: str = "comparison"):
        self.keys = list(keys) if keys else None
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
            metrics_file, overrides_file = job_dir / "metrics.json", job_dir / ".hydra" / "overrides.yaml"
            if not metrics_file.is_file():
                continue
            metrics = json.loads(metrics_file.read_text())
            overrides = overrides_file.read_text().strip() if overrides_file.is_file() else ""
            overrides = " ".join(line.lstrip("- ").strip() for line in overrides.splitlines())
            rows.append({"job": job_dir.name, "overrides": overrides, **metrics})
        if not rows:
            log.warning("CollectMetrics: no metrics.json found under %s", sweep_dir)
            return
        keys = self.keys or sorted({k for r in rows for k in r} - {"job", "overrides"})
        columns = ["job", "overrides", *keys]
        with open(sweep_dir / f"{self.filename}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in rows:
            cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        (sweep_dir / f"{self.filename}.md").write_text("\n".join(lines) + "\n")
        log.info("wrote %s", sweep_dir / f"{self.filename}.csv")
