"""Every file the repository's text names exists in the repository.

The docs, the docstrings and comments (where the ``--help`` texts come from), the configs, the benchmarks and
the scripts are read for two kinds of reference: a markdown link to a relative path, and a path written out
(``docs/design.md``, ``configs/train/paper_stage1.yaml``, ``rl/de_grpo.py``). A written-out path counts as found
when it exists under the repository root, ``src/``, ``src/favchat/`` or the folder of the file that names it.
Names such as ``README.md`` (a capitalised markdown file) must exist somewhere in the repository, since a reader
would look for them there.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("*.md", "docs/**/*.md", "src/**/*.py", "src/**/*.yaml", "configs/**/*.yaml", "benchmarks/*.py",
           "tests/*.py", "tools/*", ".ci/*", "pyproject.toml")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
# a path with a folder and a file extension; the last part must not be a placeholder
PATH = re.compile(r"(?<![\w./-])((?:\.{1,2}/)?(?:[\w.-]+/)+[\w.-]+\.(?:md|py|yaml|yml|sh|toml|txt|json|html|js|css))\b")
CAPS_MD = re.compile(r"(?<![\w./-])([A-Z][A-Z_]+\.md)\b")
# folders whose files are written by runs, not kept in the repository
OUTPUT_FOLDERS = ("runs/", "data/", "out/", "ckpt/", "/tmp/", "checkpoint-")


def scanned_files(root: Path) -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.split()
    files = {root / f for f in tracked}
    this = Path(__file__).resolve()  # its planted references are the test's own
    return sorted(p for pattern in SCANNED for p in root.glob(pattern)
                  if p in files and p.is_file() and p.resolve() != this)


def broken_refs(root: Path) -> list[str]:
    """``file:line: reference`` for every reference that names a file the repository does not have."""
    names = {p.name for p in root.rglob("*") if ".git" not in p.parts}
    bases = (root, root / "src", root / "src" / "favchat")
    bad = []
    for f in scanned_files(root):
        rel = f.relative_to(root)
        for lineno, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            refs = []
            if f.suffix == ".md":
                for target in MD_LINK.findall(line):
                    path = target.split("#")[0]
                    if path and not re.match(r"[a-z]+:", path) and not (f.parent / path).exists():
                        refs.append(target)
            for path in PATH.findall(line):
                # placeholders: DIR/report.md, <clip>.json, shard-*.jsonl
                if any(o in path for o in OUTPUT_FOLDERS) or re.search(r"[<>{}*]|\.\.\.|(^|/)[A-Z_]+/", path):
                    continue
                if not any((b / path).exists() for b in (*bases, f.parent)):
                    refs.append(path)
            refs += [n for n in CAPS_MD.findall(line) if n not in names]
            bad += [f"{rel}:{lineno}: {r}" for r in dict.fromkeys(refs)]
    return bad


def test_every_named_file_exists():
    bad = broken_refs(ROOT)
    assert not bad, "references to files that are not in the repository:\n" + "\n".join(bad)


def test_a_planted_bad_reference_is_found(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "src" / "favchat" / "model").mkdir(parents=True)
    (tmp_path / "docs" / "design.md").write_text("# Design\n")
    (tmp_path / "README.md").write_text("[design](docs/design.md), [gone](docs/gone.md), see DESIGN.md\n")
    (tmp_path / "src" / "favchat" / "model" / "modeling.py").write_text(
        '"""Eq. 1 (docs/design.md §1); the demo writes runs/demo/report/metrics.json."""\n'
        "# see configs/train/missing.yaml and model/modeling.py\n")
    assert broken_refs(tmp_path) == [
        "README.md:1: docs/gone.md",
        "README.md:1: DESIGN.md",
        "src/favchat/model/modeling.py:2: configs/train/missing.yaml",
    ]
