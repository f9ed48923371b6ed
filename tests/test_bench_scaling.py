"""`python -m bench --scaling --smoke` writes a table and a small plot per scaling result.

A child process runs the command at the tiny smoke sizes for two of the cases
(the rows case, with its fitted lines, and the infeed case, with its marked
switch: about a minute); CI's `python -m bench --smoke` runs all of them. The
test checks what the command wrote, never a time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import TESTS, replicas

from bench.run import CASES as SUITE
from bench.run import SCALING, parse_args

CASES = ("scale-rows", "scale-infeed")  # the two the smoke test below runs
RESULTS = ("rows-predict", "rows-evaluate", "infeed", "infeed-rss")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_ci_smoke_run_includes_every_scaling_case_and_scaling_runs_only_them():
    assert parse_args(["--smoke"]).cases == [*SUITE, *SCALING]
    assert parse_args(["--scaling"]).cases == list(SCALING)
    assert parse_args([]).cases == list(SUITE)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(replicas() > 1, reason="runs in the one-device parent process")
def test_scaling_smoke_writes_a_table_and_a_small_plot_per_result(tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("TPUFIT_TEST_REPLICAS", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--scaling", "--smoke", "--cases", ",".join(CASES)]
        + ["--out", str(tmp_path)],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [
        line.removeprefix("== ") for line in done.stdout.splitlines() if line.startswith("== ")
    ] == list(CASES)
    tables = (tmp_path / "scaling.md").read_text()
    for name in RESULTS:
        assert f"(scaling-{name}.png)" in tables
        image = (tmp_path / f"scaling-{name}.png").read_bytes()
        assert image.startswith(PNG_SIGNATURE) and len(image) < 60_000
    # The rows results give each contender's fitted fixed cost and cost per row.
    assert tables.count("| fitted line | fixed (s) | µs/row |") == 2
