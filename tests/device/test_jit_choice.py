"""Tests of tpufit/device/jit_choice.py: XLA or not, as asked or by a fixed rule (never timings)."""

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


def conv_step(x):
    images = tf.reshape(x, (4, 1, FEATURES, 1))
    return tf.reduce_sum(tf.nn.conv2d(images, tf.ones((1, 3, 1, 2)), strides=1, padding="SAME"))


def test_auto_takes_xla_for_a_step_it_compiles():
    choice = prepared("auto")
    assert list(choice.steps) == [True] and choice.jit_compile is True


def test_auto_keeps_a_convolution_step_off_xla_on_a_cpu_only_machine():
    assert not tf.config.list_physical_devices("GPU")
    assert prepared("auto", conv_step).jit_compile is False
    assert prepared(True, conv_step).jit_compile is True


def test_auto_keeps_a_convolution_step_off_xla_quietly_even_where_xla_cannot_compile_it(recwarn):
    def conv_and_host_step(x):
        return conv_step(x) + host_step(x)

    assert not tf.config.list_physical_devices("GPU")
    assert prepared("auto", conv_and_host_step).jit_compile is False
    assert not [w for w in recwarn if "XLA" in str(w.message)]


def test_auto_finds_a_convolution_in_a_function_the_step_calls():
    def branching_conv_step(x):
        return tf.cond(tf.reduce_sum(x) > 0, lambda: conv_step(x), lambda: tf.constant(0.0))

    assert prepared("auto", branching_conv_step).jit_compile is False


def test_the_decision_is_the_same_every_time():
    for step in (dense_step, conv_step):
        assert len({prepared("auto", step).jit_compile for _ in range(3)}) == 1


@pytest.mark.parametrize("requested", [True, False])
def test_a_setting_is_kept(requested):
    choice = prepared(requested)
    assert list(choice.steps) == [requested] and choice.jit_compile is requested


def test_auto_runs_a_step_xla_cannot_compile_without_it_and_says_why():
    with pytest.warns(UserWarning, match="without XLA: XLA cannot compile"):
        choice = prepared("auto", host_step)
    assert choice.jit_compile is False
    with pytest.raises(tpufit.InvalidArgumentError, match="jit_compile=True"):
        prepared(True, host_step)


def test_auto_quietly_keeps_a_step_taking_strings_off_xla(recwarn):
    choice = JitChoice("auto", "predict")
    choice.prepare(make_strategy(1), tf.strings.length, tf.TensorSpec((4,), tf.string))
    assert choice.jit_compile is False and not recwarn.list
    with pytest.raises(tpufit.InvalidArgumentError, match="holds strings"):
        JitChoice(True, "predict").prepare(
            make_strategy(1), tf.strings.length, tf.TensorSpec((4,), tf.string)
        )


@pytest.mark.parametrize(
    "spec",
    [tf.RaggedTensorSpec((4, None), tf.float32), tf.SparseTensorSpec((4, FEATURES), tf.float32)],
)
def test_auto_quietly_keeps_a_step_taking_ragged_or_sparse_data_off_xla(spec, recwarn):
    choice = JitChoice("auto", "train")
    choice.prepare(make_strategy(1), tf.reduce_sum, spec)
    assert choice.jit_compile is False and not recwarn.list
    with pytest.raises(tpufit.InvalidArgumentError, match="ragged or sparse"):
        JitChoice(True, "train").prepare(make_strategy(1), tf.reduce_sum, spec)
