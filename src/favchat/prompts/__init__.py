"""Prompt templates of the evaluation (judge criteria, AutoDQ, EMER, the zero-shot protocols), one file each.

Templates are plain text with ``{name}`` fields (``{{`` / ``}}`` for a literal brace). They live here, in
one place, so that every number the harness reports can be traced to the exact words that produced it;
the report records a hash of each template it used.
"""

from __future__ import annotations

import hashlib
import string
from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    """The text of ``prompts/<name>.txt``."""
    path = resources.files(__package__) / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.name[:-4] for p in resources.files(__package__).iterdir() if p.name.endswith(".txt"))
        raise KeyError(f"no prompt template {name!r}; known: {known}")
    return path.read_text(encoding="utf-8").strip()


def fields(name: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(load(name)) if f}


def render(name: str, **values: object) -> str:
    """Fill a template; a missing or unexpected field is an error naming it."""
    need = fields(name)
    missing, extra = need - values.keys(), values.keys() - need
    if missing or extra:
        raise KeyError(f"prompt {name!r} needs fields {sorted(need)}; missing {sorted(missing)}, unexpected {sorted(extra)}")
    return load(name).format(**values)


def digest(name: str) -> str:
    """A short hash of a template, recorded in reports so that changed prompts are visible."""
    return hashlib.sha256(load(name).encode()).hexdigest()[:12]
