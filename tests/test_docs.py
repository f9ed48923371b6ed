"""The documentation: README.md and docs/*.md run as written and link only to the repository.

Every ```python block of those files runs, in the order of its file, with the blocks of
one file sharing one namespace (a later block may use what an earlier one defined), in a
fresh temporary working directory. A block that cannot run here (it needs a TPU, a
cluster, your files) says so on its fence: ```python no-run. Tracebacks name the
Markdown file and its line.

Every relative link, and every file path in backticks that starts at the repository's
top (`tests/...`, `tpufit/...`), must name a file or folder of the repository, so a
clone has everything the documentation points at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
TOP_FOLDERS = "|".join(
    re.escape(f) for f in ("tpufit/", "tests/", "docs/", "examples/", "bench/", ".ci/")
)
CODE_PATH = re.compile(rf"`((?:{TOP_FOLDERS})[A-Za-z0-9_./-]*)`")
NO_RUN = "no-run"


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """Returns `(first code line, code, runs)` for every ```python block of `path`."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        info = match.group(1).split()
        if not info or info[0] != "python":
            continue
        unknown = set(info[1:]) - {NO_RUN}
        assert not unknown, f"{_name(path)}: unknown fence words {sorted(unknown)}"
        first_line = text.count("\n", 0, match.start(2)) + 1
        blocks.append((first_line, match.group(2), NO_RUN not in info[1:]))
    return blocks


RUNNABLE = [path for path in DOCS if any(runs for _, _, runs in python_blocks(path))]


@pytest.mark.parametrize("path", RUNNABLE, ids=_name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for first_line, code, runs in python_blocks(path):
        if runs:
            # Blank lines before the code keep the Markdown file's line numbers in tracebacks.
            source = "\n" * (first_line - 1) + code
            exec(compile(source, str(path), "exec"), namespace)


def test_every_python_block_is_run_or_marked():
    # A block with another language word, or none, would be skipped silently.
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            info = match.group(1).split()
            if info and info[0] in ("py", "python3", "pycon", "ipython"):
                pytest.fail(f"{_name(path)}: fence {match.group(1)!r}; use python or python no-run")


def test_the_migration_guide_runs_its_after_example_only():
    blocks = python_blocks(ROOT / "docs" / "migrating-from-tpuestimator.md")
    assert [runs for _, _, runs in blocks].count(True) >= 1
    for _, code, runs in blocks:
        assert runs != ("TPUEstimator(" in code), "the TPUEstimator block must be no-run"


def _targets(path: Path) -> list[tuple[str, Path]]:
    """Returns `(target, folder it is relative to)` for every link and top-level path of `path`."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))  # Code blocks hold no links.
    links = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]  # http:, mailto:
    return [(t, path.parent) for t in links] + [(t, ROOT) for t in CODE_PATH.findall(text)]


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_links_name_files_of_the_repository(path):
    missing = []
    for target, base in _targets(path):
        relative = target.split("#")[0]
        if not relative:
            continue  # An anchor in the same page.
        resolved = (base / relative).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            missing.append(target)
    assert not missing, f"{_name(path)} points at what the repository lacks: {missing}"


def test_no_page_points_at_files_outside_the_repository():
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, f"{_name(path)} names DESIGN.md, which a clone lacks"
        assert not re.search(r"\]\(https?:", text), f"{_name(path)} links outside the repository"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.startswith("python -m pytest")]
    assert len(commands) == 1, commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "grep -m1 -E '^python -m pytest' README.md" in ci
    assert "$test_cmd || tests_rc=$?" in ci
