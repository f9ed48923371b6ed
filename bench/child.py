"""Running a benchmark module in a fresh Python and reading back what it reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(module: str, args: list[str], prefix: str, timeout: float) -> list[str]:
    """Runs ``python -m module *args`` from the repository's root, with it on the path.

    Returns the rest of each line of its output that starts with ``prefix``.

    Raises:
        RuntimeError: the child failed or reported nothing (its output's tail attached).
    """
    command = [sys.executable, "-m", module, *args]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    reported = [line[len(prefix) :] for line in done.stdout.splitlines() if line.startswith(prefix)]
    if done.returncode != 0 or not reported:
        raise RuntimeError(
            f"{' '.join(command[1:])} failed (exit code {done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return reported
