"""``experiment=compare_edit``: every editing method on the same source images, one table, one figure."""

from diffedit_lab.methods.compare.module import CompareMethod

__all__ = ["CompareMethod"]
