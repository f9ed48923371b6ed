"""Every script of examples/ runs with `--smoke` and ends with its result line.

Each runs as a user runs it (`python examples/<name>.py --smoke`) in a child
process: exit code 0, the expected last line on stdout, and no TensorFlow
retracing warning caused by tpufit on stderr.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import TESTS, replicas

EXAMPLES = TESTS.parent / "examples"
TIMEOUT = 600  # seconds: the test fails rather than hangs

# script (with its arguments) -> the pattern of its last line of output.
RESULT_LINES = {
    "digits_mlp.py": r"test accuracy \(argmax\(predict\)\): \d\.\d{4}",
    "digits_cnn.py": r"digits CNN: test accuracy \d\.\d{4} \(evaluate and predict agree\)",
    "text_classification.py": r"text classification: test accuracy \d\.\d{4} on 200 sentences",
    "gan.py": r"GAN: 4 steps, d_loss \d+\.\d{3}, g_loss \d+\.\d{3}; drawn digits judged .*",
    "input_fn_hooks.py": r"input_fn \+ hooks: 50 steps, 50 per-step losses and gradient norms .*",
    "model_dir_resume_export.py": (
        r"model_dir: resumed at step 4, ended at step 8 with an uninterrupted run's weights; "
        r"SavedModel served 100 rows bit-equal to tm.predict"
    ),
    "multi_worker.py --workers 2": r"multi-worker: 2 workers agree: global step 4, .*",
}
SLOW = {"model_dir_resume_export.py", "multi_worker.py --workers 2"}

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(replicas() > 1, reason="runs in the one-device parent process"),
]


def run_example(command: str) -> subprocess.CompletedProcess:
    script, *arguments = command.split()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("TPUFIT_TEST_REPLICAS", None)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments, "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in RESULT_LINES],
)
def test_example_runs_in_smoke_mode_and_prints_its_result(command):
    done = run_example(command)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last_line = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(RESULT_LINES[command], last_line), done.stdout[-3000:]
    assert "retracing" not in done.stderr, done.stderr[-3000:]


def test_every_example_script_is_tested():
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    assert scripts == {command.split()[0] for command in RESULT_LINES}
