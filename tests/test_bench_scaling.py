"""`python -m bench --scaling --smoke` runs every scaling case and writes its tables and plots.

A child process runs the command as CI does, at the tiny smoke sizes; the test
checks what it wrote (one Markdown table per scaling result, one small PNG
each), never a time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import TESTS, replicas

from bench.run import SCALING

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.slow,
    pytest.mark.skipif(replicas() > 1, reason="runs in the one-device parent process"),
]

RESULTS = ("rows-predict", "rows-evaluate", "loop", "hooks", "replicas", "infeed", "infeed-rss")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_scaling_smoke_writes_a_table_and_a_small_plot_per_result(tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("TPUFIT_TEST_REPLICAS", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--scaling", "--smoke", "--out", str(tmp_path)],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [
        line.removeprefix("== ") for line in done.stdout.splitlines() if line.startswith("== ")
    ] == list(SCALING)
    tables = (tmp_path / "scaling.md").read_text()
    for name in RESULTS:
        assert f"(scaling-{name}.png)" in tables
        image = (tmp_path / f"scaling-{name}.png").read_bytes()
        assert image.startswith(PNG_SIGNATURE) and len(image) < 60_000
    # The rows results give each contender's fitted fixed cost and cost per row.
    assert tables.count("| fitted line | fixed (s) | µs/row |") == 2
