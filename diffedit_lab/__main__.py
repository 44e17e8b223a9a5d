"""``python -m diffedit_lab [group=option ...] [key=value ...]`` — the Hydra entry point."""

from __future__ import annotations

import logging
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


if __name__ == "__main__":
    main()
