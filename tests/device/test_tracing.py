"""Tests of tpufit/device/tracing.py: AutoGraph converts the loop function alone."""

from __future__ import annotations

import pytest
import tensorflow as tf

from tpufit.device.tracing import converted_alone


def absolute(x):
    if x < 0:  # Python control flow on a tensor: runs only if AutoGraph converted it
        return -x
    return x


@converted_alone
def total(n):
    result = tf.constant(0)
    for i in tf.range(n):
        result += i
    return result


@converted_alone
def total_of_absolutes(n):
    result = tf.constant(0)
    for i in tf.range(n):
        result += absolute(i - 2)
    return result


@pytest.mark.parametrize("autograph", [False, True])
def test_the_function_converts_itself_inside_any_trace(autograph):
    traced = tf.function(total, autograph=autograph)
    assert int(traced(tf.constant(5))) == 10
    assert int(traced(tf.constant(3))) == 3
    assert traced.experimental_get_tracing_count() == 1  # the loop is in the graph


@pytest.mark.parametrize("autograph", [False, True])
def test_what_it_calls_is_traced_as_written(autograph):
    with pytest.raises(TypeError, match="tf.Tensor"):
        tf.function(total_of_absolutes, autograph=autograph)(tf.constant(4))
