"""Tests of tpufit/device/jit_choice.py: XLA or not, as asked or as measured."""

from __future__ import annotations

import pytest
import tensorflow as tf
from conftest import FEATURES, make_strategy

import tpufit
from tpufit.device.jit_choice import JitChoice

SPEC = tf.TensorSpec((4, FEATURES), tf.float32)


def dense_step(x):
    return tf.reduce_sum(tf.matmul(x, tf.ones((FEATURES, 3))))


def host_step(x):
    return tf.reduce_sum(tf.numpy_function(lambda a: a * 2.0, [x], tf.float32))


def prepared(requested, step=dense_step):
    choice = JitChoice(requested, "train")
    choice.prepare(make_strategy(1), step, SPEC)
    return choice


def test_auto_holds_both_steps_and_alternates_until_each_has_a_timed_loop():
    choice = prepared("auto")
    assert set(choice.steps) == {True, False} and choice.jit_compile is None
    order = []
    for per_step in (5.0, 1.0, 0.002, 0.001):  # first loops pay their compiles
        use_xla = choice.use_xla()
        order.append(use_xla)
        choice.record(use_xla, 10, per_step * 10)
    assert order == [True, False, True, False]
    assert choice.jit_compile is False  # 1 ms a step without XLA beat 2 ms with it
    assert choice.use_xla() is False and not choice.measuring


def test_auto_keeps_xla_when_it_is_at_least_as_fast():
    choice = prepared("auto")
    for per_step in (5.0, 1.0, 0.001, 0.001):
        use_xla = choice.use_xla()
        choice.record(use_xla, 4, per_step * 4)
    assert choice.jit_compile is True


def test_loops_that_ran_no_step_do_not_count():
    choice = prepared("auto")
    choice.record(True, 0, 0.0)
    assert choice.timings[True] == [] and choice.use_xla() is True


@pytest.mark.parametrize("requested", [True, False])
def test_a_setting_is_kept_without_measuring(requested):
    choice = prepared(requested)
    assert list(choice.steps) == [requested] and choice.jit_compile is requested
    choice.record(requested, 10, 1.0)
    assert choice.timings == {True: [], False: []}


def test_auto_runs_a_step_xla_cannot_compile_without_it_and_says_why():
    with pytest.warns(UserWarning, match="without XLA: XLA cannot compile"):
        choice = prepared("auto", host_step)
    assert choice.jit_compile is False
    with pytest.raises(tpufit.InvalidArgumentError, match="jit_compile=True"):
        prepared(True, host_step)
