"""The user documentation links files of the repository, not paths of a build machine."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_docs_name_no_absolute_machine_paths() -> None:
    machine_path = re.compile(r"(?<![\w.~])/(work|home|root|tmp/iondrag)/")
    found = [
        f"{doc.name}:{number}: {line.strip()}"
        for doc in DOCS
        for number, line in enumerate(doc.read_text().splitlines(), 1)
        if machine_path.search(line)
    ]
    assert not found, "\n".join(found)


def test_relative_markdown_links_resolve() -> None:
    link = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")
    broken = [
        f"{doc.name}: {target}"
        for doc in DOCS
        for target in link.findall(doc.read_text())
        if not (doc.parent / target).exists()
    ]
    assert not broken, "\n".join(broken)
