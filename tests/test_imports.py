"""Every module of the package imports, and every package it imports is declared in pyproject.toml.

Importing each module finds what is missing from the environment; the declaration check finds what is only
there by chance (a dependency of a dependency, as scipy was through scikit-learn), which a change in another
package's requirements would take away.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pkgutil
import re
import sys
from pathlib import Path

import tomllib

import favchat

ROOT = Path(__file__).resolve().parents[1]
# Imported inside a guard and used only when present, with the reason it is optional.
OPTIONAL = {"mediapipe": "face-mesh landmarks for the E3 extractor, when installed (data/pipeline/extract.py)"}


def test_every_module_imports():
    for mod in pkgutil.walk_packages(favchat.__path__, "favchat."):
        importlib.import_module(mod.name)


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in reqs}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level() -> dict[str, str]:
    """{top-level module: first file importing it} for every absolute import in src/favchat, nested ones too."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "src" / "favchat").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    declared = _declared()
    dists = importlib.metadata.packages_distributions()
    problems = []
    for module, where in sorted(_imported_top_level().items()):
        if module in sys.stdlib_module_names or module == "favchat" or module in OPTIONAL:
            continue
        owners = {_normalise(d) for d in dists.get(module, [])}
        if not owners:
            problems.append(f"{module} (imported in {where}) is not installed")
        elif not owners & declared:
            problems.append(f"{module} (imported in {where}) comes from {sorted(owners)}, not declared in pyproject.toml")
    assert not problems, "\n".join(problems)
