"""The project documents itself: every file the code or the docs point at exists.

Code comments cite ``docs/*.md``; the README and the docs link each other and name
scripts, benchmarks and source files. A rename that leaves a dangling reference fails
here. Nothing may cite a design document that is not in this repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Repository paths as they are written in code and prose: `docs/cli.md`,
# guard_app/core/enforcer.py, scripts/with-keyring.sh, benchmarks/RESULTS.md ...
_PATH = re.compile(
    r"(?<![\w./-])((?:docs|scripts|benchmarks|packaging|resources|guard_app|tests|\.ci)"
    r"/[\w./-]*[\w])"
)
# Relative Markdown links: [text](architecture.md), [x](../README.md#anchor)
_MD_LINK = re.compile(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)")
_SUFFIXES = {".py", ".md", ".sh", ".toml", ".spec", ".cfg", ".xml", ".desktop", ""}


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    files = [ROOT / line for line in out.splitlines() if line]
    return [f for f in files if f.is_file() and (f.suffix in _SUFFIXES or f.name == "Makefile")
            and f.name != "test_docs.py"]


def _exists(ref: str) -> bool:
    ref = ref.rstrip(".")
    if any(ch in ref for ch in "*{}<>$"):
        return True  # a pattern or a placeholder, not a file
    path = ROOT / ref
    if path.exists():
        return True
    # `guard_app/core/state` may name a module or a package
    return path.with_suffix(".py").exists()


def _ignored(ref: str) -> bool:
    """A generated file (git ignores it): benchmarks/RESULTS-quick.md and the like."""
    return subprocess.run(["git", "check-ignore", "-q", ref], cwd=ROOT).returncode == 0


def test_every_referenced_repository_file_exists() -> None:
    missing: list[str] = []
    for file in _tracked_files():
        text = file.read_text(encoding="utf-8", errors="replace")
        for ref in set(_PATH.findall(text)):
            if not _exists(ref) and not _ignored(ref):
                missing.append(f"{file.relative_to(ROOT)}: {ref}")
        if file.suffix == ".md":
            for link in set(_MD_LINK.findall(text)):
                if link.startswith(("http", "mailto")):
                    continue
                if not (file.parent / link).exists():
                    missing.append(f"{file.relative_to(ROOT)}: link {link}")
    assert not missing, "references to files that do not exist:\n" + "\n".join(sorted(missing))


@pytest.mark.parametrize("page", ["architecture.md", "config.md", "cli.md", "state.md",
                                  "exchanges.md", "api.md", "desk.md"])
def test_the_contract_pages_exist(page: str) -> None:
    assert (ROOT / "docs" / page).is_file(), f"docs/{page} is missing"


def test_nothing_cites_a_design_document_outside_the_repository() -> None:
    cites = [f"{f.relative_to(ROOT)}" for f in _tracked_files()
             if f.suffix == ".py" and "DESIGN.md" in f.read_text(encoding="utf-8")]
    assert not cites, f"cite docs/*.md instead of DESIGN.md in: {cites}"
