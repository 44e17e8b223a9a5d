"""Seeded construction that leaves the caller's random streams untouched (lives in :mod:`diffedit_lab.utils.rng`,
which production code uses; re-exported for the tiny builders)."""

from diffedit_lab.utils.rng import seeded

__all__ = ["seeded"]
