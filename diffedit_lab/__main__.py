"""``python -m diffedit_lab [group=option ...] [key=value ...]`` — the Hydra entry point."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from diffedit_lab.utils.errors import UserError


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from diffedit_lab.run import run

    try:
        return run(cfg).value
    except UserError as exc:
        logging.getLogger("diffedit_lab").error("%s", exc)
        if _is_multirun():  # let Hydra record this job as failed and go on with the sweep
            raise RuntimeError(f"error: {exc}") from None
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def one_line(message: str) -> str:
    """Hydra's multi-line composition messages as one line: options listed after ``…:`` are comma-joined and
    the config search path dump is dropped."""
    message = message.split("Config search path:")[0]
    parts: list[str] = []
    for raw in message.splitlines():
        line = raw.strip()
        if not line:
            continue
        if raw.startswith("\t") and parts and parts[-1].endswith((":", ",")):
            parts[-1] = f"{parts[-1]} {line}," if parts[-1].endswith(":") else f"{parts[-1]} {line},"
        else:
            parts.append(line)
    return "; ".join(p.rstrip(",.") for p in parts)


def cli() -> None:
    """``main`` with Hydra's own errors (unknown group option or key, override syntax) as one ``error:`` line and
    exit status 2, like every other bad value. ``HYDRA_FULL_ERROR=1`` still shows Hydra's full report."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    wants_trace = previous == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of Hydra's report
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        if wants_trace:
            raise
        cause = exc.__cause__
        detail = f" ({one_line(str(cause))})" if cause is not None and str(cause).strip() else ""
        where = f"override '{exc.override}': " if getattr(exc, "override", None) else ""
        print(f"error: {where}{one_line(str(exc))}{detail}", file=sys.stderr)
        sys.exit(2)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


if __name__ == "__main__":
    cli()
