"""Tests of tpufit/run/stats.py: where a run's time went, from made-up loops and from real runs."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import compile_args, sleepy_model, tiny_data, tiny_model

import tpufit
from tpufit.device.outfeed import LoopResult
from tpufit.run import stats as run_stats
from tpufit.run.stats import RunStats


def loop(steps, input_seconds, compute_seconds, traced=False):
    return LoopResult({}, {}, steps, False, input_seconds, compute_seconds, traced=traced)


def stats_of(*loops, from_dataset=None):
    stats = RunStats("train", from_dataset=from_dataset)
    for result, seconds in loops:
        stats.add_loop(result, seconds)
    return stats


# --- arithmetic and verdicts ---------------------------------------------------------


def test_shares_split_the_wall_time_into_input_compute_and_host():
    stats = stats_of((loop(100, 0.30, 0.60), 1.0), (loop(100, 0.30, 0.60), 1.0))
    assert stats.steps == stats.timed_steps == 200 and stats.loops == 2
    assert stats.seconds == pytest.approx(2.0)
    assert stats.input_share == pytest.approx(0.3)
    assert stats.compute_share == pytest.approx(0.6)
    assert stats.host_share == pytest.approx(0.1)
    assert stats.host_seconds == pytest.approx(0.2)
    assert stats.steps_per_second == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("input_seconds", "compute_seconds", "bound"),
    [
        (0.50, 0.45, "input"),
        (0.20, 0.75, "input"),
        (0.10, 0.85, "partly input"),
        (0.05, 0.94, "partly input"),
        (0.02, 0.50, "host"),
        (0.02, 0.95, "compute"),
    ],
)
def test_the_verdict_uses_the_profilers_input_thresholds(input_seconds, compute_seconds, bound):
    stats = stats_of((loop(100, input_seconds, compute_seconds), 1.0))
    assert stats.bound == bound
    assert stats.input_bound == (bound == "input")


@pytest.mark.parametrize(
    ("input_seconds", "compute_seconds", "wall_seconds", "printed"),
    [
        (6.0, 5.0, 12.0, False),  # input-bound, but its wait is short of the threshold
        (12.0, 10.0, 24.0, True),  # input-bound, and the wait cost 12 s
        (1.0, 30.0, 50.0, True),  # host-bound: 19 s around the loops
        (0.5, 99.0, 100.0, False),  # compute-bound: no advice to give
        (0.0, 0.0, 0.0, False),  # an empty run
    ],
)
def test_the_summary_is_printed_only_for_a_limit_that_cost_enough_time(
    capsys, input_seconds, compute_seconds, wall_seconds, printed
):
    stats = stats_of((loop(100, input_seconds, compute_seconds), wall_seconds))

    stats.report(verbose=1)

    assert stats.worth_reporting == printed
    assert (capsys.readouterr().out != "") == printed
    stats.report(verbose=0)
    assert capsys.readouterr().out == ""


def test_input_advice_names_the_fixes_for_a_dataset_and_for_arrays():
    slow = (loop(10, 0.8, 0.1), 1.0)
    dataset_advice = stats_of(slow, from_dataset=True).summary()
    for fix in ("Input-bound", "num_parallel_calls", ".cache()", ".prefetch("):
        assert fix in dataset_advice
    assert "batch_size" in stats_of(slow, from_dataset=False).advice
    unknown = stats_of(slow).advice
    assert "num_parallel_calls" in unknown and "batch_size" in unknown
    assert stats_of((loop(10, 0.0, 0.99), 1.0)).advice == ""


def test_loops_that_compiled_are_reported_apart():
    stats = RunStats("eval")
    stats.add_loop(loop(1, 0.0, 0.001, traced=True), 3.0)
    stats.add_loop(loop(99, 0.0, 0.95), 1.0)
    assert stats.steps == 100 and stats.timed_steps == 99
    assert stats.compile_seconds == 3.0 and stats.seconds == 1.0
    assert stats.steps_per_second == pytest.approx(99.0)
    assert "+3.00 s compiling" in stats.summary()


def test_an_empty_run_has_zero_shares():
    stats = RunStats("predict")
    assert stats.steps_per_second == stats.input_share == stats.host_share == 0.0
    assert stats.bound == "compute"


def test_as_dict_holds_measurements_and_verdict():
    fields = stats_of((loop(10, 0.5, 0.4), 1.0)).as_dict()
    assert fields["bound"] == "input" and fields["input_bound"] is True
    assert fields["loop_sizes"] == [10] and fields["steps_per_second"] == pytest.approx(10.0)


# --- real runs -------------------------------------------------------------------------


def slow_pipeline(x, y, seconds_per_batch: float) -> tf.data.Dataset:
    """Batches behind a sequential map that sleeps: the input is the bottleneck."""

    def costly(xb, yb):
        token = tf.py_function(lambda: time.sleep(seconds_per_batch) or 0.0, [], tf.float32)
        return xb + 0.0 * tf.reshape(token, []), yb

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16, drop_remainder=True).map(costly)


def test_fit_on_a_slow_pipeline_is_reported_input_bound_with_the_fix(capsys, monkeypatch):
    # The wait here is about 0.6 s: printed only once it passes the (lowered) threshold.
    monkeypatch.setattr(run_stats, "REPORT_MIN_SECONDS", 0.1)
    x, y = tiny_data(16 * 30)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=10)
    tm.compile(**compile_args())
    tm.fit(slow_pipeline(x, y, 0.01), epochs=2, verbose=1)
    stats = tm.last_run_stats
    assert stats.mode == "train" and stats.steps == 60 and stats.timed_steps == 50
    # 10 ms a batch: at least that much wall time a step, whatever the machine; the
    # tiny step itself takes a small fraction of it, so the wait is what limits.
    assert stats.seconds >= 0.01 * stats.timed_steps
    assert stats.input_seconds > 2 * stats.compute_seconds
    assert stats.input_bound and stats.bound == "input"
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == stats.summary()
    assert "Input-bound" in line and "num_parallel_calls" in line and ".prefetch(" in line
    assert ".cache()" in line


def test_fit_of_a_slow_step_on_cached_data_is_compute_bound_and_quiet_when_verbose_0(capsys):
    x, y = tiny_data(16 * 40)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).cache().prefetch(4)
    tm = tpufit.TPUModel(sleepy_model(0.01), iterations_per_loop=10)
    tm.compile(**compile_args(), jit_compile=False)
    tm.fit(data, epochs=2, verbose=0)
    stats = tm.last_run_stats
    # Each step sleeps 10 ms: that much compute whatever the machine; a cached,
    # prefetched batch is handed over in a small fraction of it.
    assert stats.compute_seconds >= 0.01 * stats.timed_steps
    assert stats.compute_seconds > 10 * stats.input_seconds
    assert not stats.input_bound
    assert capsys.readouterr().out == ""


def test_evaluate_and_predict_leave_their_own_stats():
    x, y = tiny_data(100)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=3)
    tm.compile(**compile_args())
    tm.evaluate(x, y, batch_size=10, verbose=0)
    assert tm.last_run_stats.mode == "eval" and tm.last_run_stats.steps == 10
    tm.predict(x, batch_size=10, verbose=0)
    assert tm.last_run_stats.mode == "predict" and tm.last_run_stats.steps == 10
    assert tm.last_run_stats.loop_sizes == [3, 3, 3, 1]
    assert np.isfinite(tm.last_run_stats.input_seconds)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_heavy_step_counts_as_compute_whether_inlined_or_xla(jit_compile):
    # 8 steps, not 2: one slow get_next on a busy machine must not decide the shares.
    x = np.random.default_rng(0).normal(size=(2048, 256)).astype("float32")
    model = keras.Sequential(
        [keras.Input((256,)), keras.layers.Dense(2048), keras.layers.Dense(2048)]
    )
    tm = tpufit.TPUModel(model, iterations_per_loop=4)
    tm.compile(jit_compile=jit_compile)
    for _ in range(2):
        tm.predict(x, batch_size=256, verbose=0)
    stats = tm.last_run_stats
    # Two 256x2048 and 2048x2048 matmuls a step take milliseconds; taking a batch of
    # 256x256 (prefetched, or gathered from resident arrays) far less. A margin of 2, not
    # 5: under `pytest -n 2` on two cores the gather once took a quarter of the compute.
    assert stats.compute_seconds > 2 * stats.input_seconds
