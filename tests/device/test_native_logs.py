"""tpufit's first compile adds no TensorFlow INFO line to the user's terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tpufit.device import native_logs

XLA_INFO = ("XLA service", "Compiled cluster using XLA")

FIT_THROUGH_TPUFIT = """
    import numpy as np, keras, tpufit
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    tm = tpufit.TPUModel(model, iterations_per_loop=2)
    tm.compile(optimizer="sgd", loss="mse", jit_compile=True)
    tm.fit(np.ones((8, 4), "float32"), np.ones((8, 1), "float32"), batch_size=4)
    import warnings; warnings.warn("a warning the user must still see")
"""

PLAIN_XLA = """
    import tensorflow as tf
    print(tf.function(lambda x: x * 2.0, jit_compile=True)(tf.ones(2)).numpy())
"""


def stderr_of(code: str) -> str:
    """The child's whole stderr, as its descriptor 2 received it, TensorFlow's INFO level on."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    )
    return result.stderr


def test_info_lines_and_absls_notice_are_dropped_and_nothing_else():
    info = b"I0000 00:00:1795976915.643816   25821 service.cc:153] XLA service initialized\n"
    warning = b"W0000 00:00:1795976915.643816   25821 rendezvous.cc:412] aborting\n"
    assert native_logs.dropped(info)
    assert native_logs.dropped(b"WARNING: All log messages before absl::InitializeLog() is called")
    assert not native_logs.dropped(warning)
    assert not native_logs.dropped(b"Epoch 1/1: 100%|##########| 2/2\n")


def test_the_first_xla_compile_of_a_fit_prints_no_info_line_but_keeps_the_rest():
    plain = stderr_of(PLAIN_XLA)
    assert all(text in plain for text in XLA_INFO)  # what the fit must not add

    stderr = stderr_of(FIT_THROUGH_TPUFIT)

    assert not any(text in stderr for text in XLA_INFO)
    assert "2/2" in stderr  # the progress bar, written inside the quieted first loop
    assert "a warning the user must still see" in stderr
