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
    ``comparison.csv`` + ``comparison.md`` in the sweep dir: one row per job, its overrides and ``keys``.

    ``reference`` (optional): published numbers to print beside ours — ``"package.module:NAME"`` naming a list of
    ``{"label": str, "match": [override, ...], "values": {metric key: value}}``. A job whose overrides contain
    every ``match`` entry gets the row's ``label`` and, after each of our columns, ``paper:<key>``; the markdown
    table and the log show both.
    """

    def __init__(self, keys: list[str] | None = None, filename: str = "comparison", reference: str | None = None):
        self.keys = list(keys) if keys else None
        self.filename = filename
        self.reference = load_reference(reference) if reference else []

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
            metrics_file, overrides_file = job_dir / "metrics.json", job_dir / ".hydra" / "overrides.yaml"
            if not metrics_file.is_file():
                continue
            metrics = json.loads(metrics_file.read_text())
            overrides = overrides_file.read_text().strip() if overrides_file.is_file() else ""
            overrides = [line.lstrip("- ").strip() for line in overrides.splitlines()]
            rows.append({"job": job_dir.name, "overrides": " ".join(overrides), **metrics, **self._paper(overrides)})
        if not rows:
            log.warning("CollectMetrics: no metrics.json found under %s", sweep_dir)
            return
        published = list(dict.fromkeys(k for row in self.reference for k in row["values"]))
        keys = self.keys or published or sorted({k for r in rows for k in r} - {"job", "overrides", "paper"})
        keys = [k for k in keys if not k.startswith("paper:")]
        columns = ["job", "overrides"]
        if self.reference:
            columns.append("paper")
            keys = [c for k in keys for c in (k, f"paper:{k}")]
        columns += keys
        with open(sweep_dir / f"{self.filename}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in rows:
            cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        table = "\n".join(lines) + "\n"
        (sweep_dir / f"{self.filename}.md").write_text(table)
        log.info("wrote %s\n%s", sweep_dir / f"{self.filename}.csv", table)

    def _paper(self, overrides: list[str]) -> dict[str, Any]:
        """The reference row every ``match`` entry of which is among the job's overrides (first such row)."""
        for row in self.reference:
            if all(m in overrides for m in row["match"]):
                return {"paper": row["label"], **{f"paper:{k}": float(v) for k, v in row["values"].items()}}
        return {}


def load_reference(spec: str) -> list[dict[str, Any]]:
    """``"package.module:NAME"`` → the list it names (checked: label, match, values)."""
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        rows = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"CollectMetrics reference {spec!r}: {exc}") from exc
    for row in rows:
        if not {"label", "match", "values"} <= row.keys():
            raise ValueError(f"CollectMetrics reference {spec!r}: each row needs label, match and values: {row}")
    return list(rows)
