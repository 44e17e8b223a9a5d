"""The house's floors: every import between the package's parts points down (no import from a higher floor, so no
circles). A new part gets a floor here; an import that breaks the order fails this test with the offending file."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffedit_lab"
FLOORS = {
    "utils": 0,
    "conf": 0,
    "models": 1,
    "data": 1,
    "diffusion": 2,
    "guidance": 2,
    "evaluation": 3,
    "testing": 3,
    "callbacks": 4,
    "checks": 5,
    "methods": 6,
    "run": 7,
    "compare": 8,
    "mini": 8,
    "pipelines": 8,
    "tools": 9,
    "__main__": 10,
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "diffedit_lab" else None


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "diffedit_lab":  # from diffedit_lab import checks
                yield from (f"diffedit_lab.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_every_import_between_parts_points_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        me = rel.parts[0].removesuffix(".py")
        if me == "__init__":
            continue  # the package's lazy exports (load_pipeline) are resolved on use, from the top
        assert me in FLOORS, f"{rel}: give its part '{me}' a floor in FLOORS"
        for module in _imports(path):
            other = _part(module)
            if other is None or other == me or other == "__init__":
                continue
            assert other in FLOORS, f"{rel} imports {module}: give '{other}' a floor"
            if FLOORS[other] >= FLOORS[me]:
                wrong.append(f"{rel} (floor {FLOORS[me]}) imports {module} (floor {FLOORS[other]})")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)
