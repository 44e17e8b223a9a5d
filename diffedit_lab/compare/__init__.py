"""The comparison of every editing method on the same images (``experiment=compare_edit``): an orchestrator above
the runner (:mod:`.orchestrator`), its config (:mod:`.config`) and its table/figure/report (:mod:`.report`)."""

from diffedit_lab.compare.orchestrator import Comparison

__all__ = ["Comparison"]
