"""Tests of tpufit/loop_length.py: loop sizes from a setting and from measured loop times.

A simulated device stands in for the clock: a loop of `n` steps takes
`overhead + n * step` seconds (times a noise factor where said), so the step
time the sizes should follow is known exactly.
"""

from __future__ import annotations

import random

import keras
import numpy as np
import pytest
from conftest import compile_args, copy_model, sleepy_model, tiny_data, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

import tpufit
from tpufit.run.loop_length import (
    AUTO_MAX_SECONDS,
    AUTO_MIN_SECONDS,
    GROWTH,
    LoopLength,
    LoopLengths,
    as_loop_length,
)

FAST = settings(max_examples=60, deadline=None)


def drive(length, *, step, overhead, total=None, loops=30, noise=0.0, seed=0, slow_loops=()):
    """Runs `loops` loops (or until `total` steps ran); returns the sizes asked."""
    rng = random.Random(seed)
    sizes, done = [], 0
    for index in range(loops):
        remaining = None if total is None else total - done
        if remaining == 0:
            break
        size = length.next_size(remaining)
        sizes.append(size)
        seconds = (overhead + size * step) * (1 + rng.uniform(-noise, noise))
        if index in slow_loops:
            seconds += 1.0  # a checkpoint or another process
        length.record(size, seconds)
        done += size
    return sizes


# --- fixed number of steps ---------------------------------------------------------


def test_an_int_runs_that_many_steps_except_when_fewer_remain():
    length = LoopLength(4)
    assert [length.next_size(r) for r in (10, 6, 2, None)] == [4, 4, 2, 4]


def test_an_int_keeps_its_size_whatever_the_timings():
    length = LoopLength(7)
    assert drive(length, step=0.5, overhead=0.0, loops=5) == [7] * 5


# --- the time form -----------------------------------------------------------------


def test_time_form_starts_with_one_step_and_grows_at_most_fourfold():
    sizes = drive(LoopLength("2s"), step=0.001, overhead=0.0005, loops=10)
    assert sizes[0] == 1
    for i in range(1, len(sizes)):
        assert sizes[i] <= GROWTH * max(sizes[:i])


@pytest.mark.parametrize(
    ("setting", "step", "overhead", "expected"),
    [
        ("0.5s", 0.010, 0.001, 49),  # (0.5 - 0.001) / 0.010
        ("2s", 0.001, 0.0005, 1999),
        ("500ms", 0.002, 0.0, 250),
        ("1s", 0.3, 0.01, 3),
        ("0.1s", 0.5, 0.01, 1),  # a step longer than the target: one step a loop
    ],
)
def test_time_form_settles_on_the_steps_that_fill_the_target(setting, step, overhead, expected):
    sizes = drive(LoopLength(setting), step=step, overhead=overhead, loops=12)
    assert sizes[-3:] == [expected] * 3


def test_time_form_loops_take_about_the_target_despite_noisy_timings():
    step, overhead = 0.004, 0.002
    sizes = drive(LoopLength("1s"), step=step, overhead=overhead, loops=30, noise=0.1)
    for size in sizes[10:]:
        assert 0.75 <= overhead + size * step <= 1.25


def test_one_slow_loop_does_not_shrink_the_next_one():
    sizes = drive(LoopLength("1s"), step=0.01, overhead=0.0, loops=12, slow_loops=(9,))
    assert sizes[8:] == [100] * 4


def test_loops_follow_a_changed_step_time_within_three_loops():
    length = LoopLength("1s")
    drive(length, step=0.01, overhead=0.0, loops=10)
    sizes = drive(length, step=0.02, overhead=0.0, loops=3)
    assert sizes[-1] == 50


# --- auto --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overhead", "target"),
    [
        (0.0001, AUTO_MIN_SECONDS),  # 100x overhead is 10 ms: responsive floor
        (0.005, 0.5),  # overhead 1% of a 0.5 s loop
        (0.05, AUTO_MAX_SECONDS),  # would be 5 s: capped
    ],
)
def test_auto_aims_at_100x_the_measured_overhead_within_bounds(overhead, target):
    step = 0.001
    length = LoopLength("auto")
    sizes = drive(length, step=step, overhead=overhead, loops=15)
    assert length.overhead_seconds == pytest.approx(overhead, rel=1e-6)
    assert length.step_seconds == pytest.approx(step, rel=1e-6)
    assert length.target_seconds == pytest.approx(target, rel=1e-6)
    assert sizes[-1] == int((target - overhead) / step)
    if target < AUTO_MAX_SECONDS:
        assert overhead / (overhead + sizes[-1] * step) <= 0.01


def test_auto_is_the_default():
    assert LoopLength().kind == "auto"
    assert LoopLength().next_size(100) == 1


@FAST
@given(
    setting=st.sampled_from(["auto", "0.05s", "1s", "3s", 1, 5, 64]),
    step=st.floats(1e-5, 0.5),
    overhead=st.floats(0.0, 0.05),
    total=st.integers(1, 5000),
    noise=st.floats(0.0, 0.3),
    seed=st.integers(0, 1000),
)
def test_loops_never_run_more_steps_than_remain_and_run_them_all(
    setting, step, overhead, total, noise, seed
):
    length = LoopLength(setting)
    sizes = drive(length, step=step, overhead=overhead, total=total, loops=10**6, noise=noise)
    assert sum(sizes) == total
    assert all(size >= 1 for size in sizes)
    if not isinstance(setting, int):
        assert sizes[0] == 1
        assert all(sizes[i] <= GROWTH * max(sizes[:i]) for i in range(1, len(sizes)))


@FAST
@given(step=st.floats(1e-5, 0.05), overhead=st.floats(1e-5, 0.02))
def test_auto_loops_take_between_the_bounds_once_settled(step, overhead):
    sizes = drive(LoopLength("auto"), step=step, overhead=overhead, loops=25)
    seconds = overhead + sizes[-1] * step
    assert seconds <= AUTO_MAX_SECONDS
    assert seconds > AUTO_MIN_SECONDS - step  # whole steps: at most one short of the target


# --- bookkeeping -------------------------------------------------------------------


def test_loops_without_steps_are_ignored():
    length = LoopLength("1s")
    length.record(0, 0.5)
    assert length.step_seconds is None
    assert length.next_size(10) == 1


def test_remaining_must_be_positive_or_unknown():
    with pytest.raises(ValueError, match="remaining"):
        LoopLength("auto").next_size(0)


@pytest.mark.parametrize("value", [0, "0s", "ten", 1.5, None])
def test_bad_settings_are_tpufit_errors(value):
    with pytest.raises(tpufit.InvalidArgumentError, match="iterations_per_loop"):
        LoopLength(value)


def test_as_loop_length_keeps_an_instance_and_wraps_a_setting():
    length = LoopLength("2s")
    assert as_loop_length(length) is length
    assert as_loop_length(3).next_size(10) == 3


def test_loop_lengths_keep_one_per_mode_and_batch_size():
    lengths = LoopLengths("auto")
    train = lengths.get("train", 32)
    assert lengths.get("train", 32) is train
    assert lengths.get("train", 64) is not train
    assert lengths.get("eval", 32) is not train


# --- in TPUModel runs, with a model whose step time is known ---------------------------


def fitted(clock, setting, seconds_per_step: float, steps: int, **fit_kwargs):
    """A fit whose every step takes `seconds_per_step` on the virtual `clock`."""
    model = sleepy_model(seconds_per_step, clock=clock)
    # `Sleep` is a user layer, which "auto" would run at true size (its first step eager).
    config = tpufit.RunConfig(partial_batch="pad")
    tm = tpufit.TPUModel(model, iterations_per_loop=setting, config=config)
    tm.compile(**compile_args(), jit_compile=False)
    x, y = tiny_data(16 * steps)
    tm.fit(x, y, batch_size=16, shuffle=False, verbose=0, **fit_kwargs)
    return tm


def test_fit_with_a_time_form_sizes_loops_from_the_step_time(virtual_clock):
    tm = fitted(virtual_clock, "0.1s", 0.004, 160)
    sizes = tm.last_run_stats.loop_sizes
    assert sum(sizes) == 160 == tm.global_step
    assert sizes[:4] == [1, 1, 4, 16]  # the first loop traced and compiled: no measure
    assert all(size == 25 for size in sizes[4:-1])  # 0.1 s of 4 ms steps
    assert tm.traces == {"train": 1}


def test_auto_fit_grows_from_one_step_and_keeps_each_epoch_exact(virtual_clock):
    seen = []

    class Ends(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    tm = fitted(
        virtual_clock, "auto", 0.002, 60, epochs=3, steps_per_epoch=60, callbacks=[Ends()]
    )
    sizes = tm.last_run_stats.loop_sizes
    assert tm.global_step == 180 and sum(sizes) == 180
    assert sizes[0] == 1
    assert all(sizes[i] <= GROWTH * max(sizes[:i]) for i in range(1, len(sizes)))
    per_epoch = np.split(np.array(seen), np.flatnonzero(np.diff(seen) <= 0) + 1)
    assert [int(epoch[-1]) for epoch in per_epoch] == [59, 59, 59]
    assert tm.traces == {"train": 1}


def test_a_second_fit_starts_at_the_length_the_first_found(virtual_clock):
    tm = fitted(virtual_clock, "0.05s", 0.002, 100)
    first = tm.last_run_stats.loop_sizes
    x, y = tiny_data(16 * 100)
    tm.fit(x, y, batch_size=16, verbose=0)
    second = tm.last_run_stats.loop_sizes
    assert first[:2] == [1, 1] and second[0] == 25  # 0.05 s of 2 ms steps
    assert tm.traces == {"train": 1}


def test_auto_evaluate_and_predict_stay_exact_over_loops_of_changing_length():
    model = tiny_model()
    x, y = tiny_data(1001)
    tm = tpufit.TPUModel(model, iterations_per_loop="auto")
    tm.compile(**compile_args())
    sizes = []
    for _ in range(2):  # the second run starts with longer loops
        predictions = tm.predict(x, batch_size=8, verbose=0)
        np.testing.assert_allclose(predictions, model(x, training=False), atol=1e-5)
        sizes.append(tm.last_run_stats.loop_sizes)
    assert sizes[0][:3] == [1, 1, 4] and sum(sizes[0]) == sum(sizes[1]) == 126
    assert len(sizes[1]) < len(sizes[0])
    reference = copy_model(model)
    reference.compile(**compile_args())
    theirs = reference.evaluate(x, y, batch_size=1001, return_dict=True, verbose=0)
    ours = tm.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-5)
    assert tm.last_run_stats.steps == 126
    assert tm.traces == {"eval": 1, "predict": 1}


def test_a_cap_bounds_measured_lengths_and_passes_the_timings_on():
    length = LoopLength("1s")
    capped = length.at_most(8)
    sizes = drive(capped, step=0.001, overhead=0.0, loops=8)
    assert sizes[:3] == [1, 4, 8] and max(sizes) == 8
    assert length.step_seconds == pytest.approx(0.001)
    assert as_loop_length(capped) is capped


def test_a_cap_leaves_a_fixed_count_and_no_cap_alone():
    fixed = LoopLength(30)
    assert fixed.at_most(8) is fixed and fixed.next_size(100) == 30
    auto = LoopLength("auto")
    assert auto.at_most(None) is auto


def test_large_auto_predicts_run_in_loops_of_at_most_an_eighth():
    model = tiny_model()
    x, _ = tiny_data(1000)
    tm = tpufit.TPUModel(model)
    for _ in range(2):
        predictions = tm.predict(x, batch_size=10, verbose=0)
    np.testing.assert_allclose(predictions, model(x, training=False), atol=1e-5)
    assert max(tm.last_run_stats.loop_sizes) <= 13 and sum(tm.last_run_stats.loop_sizes) == 100
