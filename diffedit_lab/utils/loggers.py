"""Logger factories, their start-up check, and sending results, images and tables to the loggers that take them.

W&B itself is known only to :mod:`diffedit_lab.utils.wandb_dashboard`; here loggers are reached through Lightning's
``Logger`` API and a few optional hooks (``log_results``, ``log_rows``), so a CSV or TensorBoard logger just skips
what it cannot show."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from diffedit_lab.utils.errors import UserError

WANDB_FACTORY = "diffedit_lab.utils.loggers.wandb_logger"


def wandb_logger(**kwargs: Any):
    """The project's W&B logger (:class:`~diffedit_lab.utils.wandb_dashboard.DashboardLogger`), offline by itself
    when no API key is configured.

    ``WANDB_MODE`` (online / offline / disabled) always wins. Without it, we run online only if ``WANDB_API_KEY``
    is set or ``~/.netrc`` has an api.wandb.ai entry (what ``wandb login`` writes); otherwise offline, so a run on
    a compute node without credentials still logs everything locally (``wandb sync`` later).
    """
    from diffedit_lab.utils.wandb_dashboard import DashboardLogger

    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        netrc = os.path.expanduser("~/.netrc")
        logged_in = bool(os.environ.get("WANDB_API_KEY")) or (
            os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()
        )
        kwargs.setdefault("offline", not logged_in)
    elif mode in ("offline", "dryrun"):
        kwargs.setdefault("offline", True)
    os.makedirs(kwargs.get("save_dir") or ".", exist_ok=True)
    return DashboardLogger(**kwargs)


def check_loggers(group: DictConfig | None) -> None:
    """Start-up check of the ``logger`` group (nothing built or written): ``log_model`` is false, true or all."""
    from diffedit_lab.utils.wandb_dashboard import LOG_MODEL

    for name, node in (group or {}).items():
        if not isinstance(node, DictConfig) or node.get("_target_") != WANDB_FACTORY:
            continue
        value = node.get("log_model", False)
        if value not in LOG_MODEL or isinstance(value, int) and not isinstance(value, bool):
            raise UserError(f"logger.{name}.log_model={value!r}: one of false, true (each training stage's last "
                            "checkpoint as a model artifact), all (every checkpoint)")  # fmt: skip


def log_image_file(loggers, key: str, path, step: int = 0, caption: str | None = None) -> None:
    """Send a PNG to W&B (``log_image``, with ``caption``) and TensorBoard (``add_image``); other loggers keep the
    file only."""
    for logger in loggers:
        if hasattr(logger, "log_image"):
            extra = {"caption": [caption]} if caption else {}
            logger.log_image(key=key, images=[str(path)], step=step, **extra)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):
            import numpy as np
            from PIL import Image

            logger.experiment.add_image(key, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")


def log_rows(loggers, key: str, rows: list[dict[str, Any]], line: tuple[str, Sequence[str]] | None = None) -> None:
    """A table (one dict per row; ``pathlib.Path`` and image tensors are pictures) to the loggers that show tables;
    ``line=(x, [y, …])`` also plots columns against ``x``."""
    for logger in loggers:
        if hasattr(logger, "log_rows"):
            logger.log_rows(key, rows, (line[0], list(line[1])) if line else None)


def begin_run(loggers, cfg: DictConfig, stages: list[str], method: Any = None) -> None:
    for logger in loggers:
        if hasattr(logger, "begin_run"):
            logger.begin_run(cfg, stages, method)


def stage_started(loggers, stage: Any) -> None:
    for logger in loggers:
        if hasattr(logger, "stage_started"):
            logger.stage_started(stage.name, stage.train)


def stage_finished(loggers, stage: Any, run_dir) -> None:
    for logger in loggers:
        if hasattr(logger, "stage_finished"):
            logger.stage_finished(stage.name, run_dir, tuple(stage.outputs))


def nested(loggers, prefix: str) -> list:
    """The loggers a run nested in this one logs through (keys under ``prefix``); loggers without nesting drop."""
    return [lg.nested(prefix) for lg in loggers if hasattr(lg, "nested")]


def finish_run(loggers, run_dir, method: Any = None, failed: bool = False) -> bool:
    """Let each logger file the run's results and close (``failed``: the run stopped on an error); True if one
    did."""
    done = False
    for logger in loggers:
        if hasattr(logger, "finish_run"):
            logger.finish_run(run_dir, method, failed)
            done = True
    return done
