"""The package layout as a specification: which part of cotdistill may import which.

The stages read in order from the folders: data -> annotation -> training -> evaluation -> reporting.
core/ is what every stage shares; models/ and teachers/ are the backends the stages call. A stage
never imports another stage (they meet through files in the run directory and the pipeline), the
report never reaches for models or teachers, and core imports nothing else of cotdistill."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cotdistill"

# The packages each package may import (besides itself). The top-level modules (cli.py, pipeline.py,
# study.py) run the stages and may import anything.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "models": {"core"},
    "teachers": {"core", "models"},
    "annotation": {"core", "data", "teachers"},
    "training": {"core", "data", "models", "teachers"},  # teachers: scoring.py, for token-level distillation
    "evaluation": {"core", "data", "models", "teachers"},
    "reporting": {"core", "data"},
}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (SRC / parts[1]).is_dir() else "top"


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every cotdistill import, lazy ones included."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cotdistill":
                names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "cotdistill" else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "cotdistill"]
            else:
                continue
            found += [(module, name, node.lineno) for name in names]
    return found


def test_every_package_imports_only_the_layers_below_it():
    wrong = []
    for module, imported, line in imports():
        source, target = package_of(module), package_of(imported)
        if source in ALLOWED and target != source and target not in ALLOWED[source]:
            wrong.append(f"{module}:{line} imports {imported} ({source} -> {target})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_exists_and_says_what_it_holds(package):
    init = SRC / package / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))


def test_the_only_top_level_modules_are_the_runners():
    top = sorted(p.stem for p in SRC.glob("*.py"))
    assert top == ["__init__", "__main__", "cli", "cli_options", "pipeline", "study"]
