"""The padding conformance cases again on four replicas, in a child process.

The CPU must be split into logical devices before TensorFlow starts, so each
padding module runs in a child pytest with `TPUFIT_TEST_REPLICAS=4`: there the
attached model is built and runs under a `MirroredStrategy` over four CPUs and
is compared with plain Keras on one device (see `test_padding_cases.py` for the
cases compared otherwise, and those expected to fail there).
"""

from __future__ import annotations

import pytest
from conftest import replicas, run_pytest_with_replicas


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(replicas() > 1, reason="this is the child process")
@pytest.mark.parametrize("module", ["test_padding_cases.py", "test_padding_families.py"])
def test_the_padding_cases_hold_on_four_replicas(module):
    summary = run_pytest_with_replicas(f"conformance/{module}", 4, timeout=3000)
    assert " failed" not in summary, summary
