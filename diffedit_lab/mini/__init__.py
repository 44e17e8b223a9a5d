"""``make mini``: every trainable method shown learning on real images that ship in packages (see :mod:`.study`).

An orchestrator above the runner, like the comparison: each step is a nested run of :func:`diffedit_lab.run.run`
composed from ``conf/experiment/mini_*.yaml``; nothing under ``methods/`` knows it exists."""
