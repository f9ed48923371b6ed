"""Choosing the strategy and placing the model under it."""

from __future__ import annotations

import pytest
import tensorflow as tf
from conftest import tiny_model

import tpufit
from tpufit.device import strategy


@pytest.mark.parametrize("requested", [None, "auto"])
def test_auto_on_a_cpu_machine_is_the_default_strategy(requested):
    chosen = strategy.resolve_strategy(requested)
    assert chosen is tf.distribute.get_strategy()
    assert strategy.describe(chosen).endswith("with 1 replica")


def test_a_given_strategy_is_used_as_is():
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert strategy.resolve_strategy(one_device) is one_device


def test_anything_else_is_a_type_error_naming_the_argument():
    with pytest.raises(tpufit.InvalidTypeError, match="strategy"):
        strategy.resolve_strategy("tpu-please")


def test_a_model_already_under_the_strategy_is_not_copied():
    model = tiny_model()
    assert strategy.place_model(model, tf.distribute.get_strategy()) is model


def test_a_model_built_outside_a_strategy_is_cloned_with_its_weights():
    model = tiny_model()
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    placed = strategy.place_model(model, one_device)
    assert placed is not model
    for a, b in zip(model.get_weights(), placed.get_weights(), strict=False):
        assert (a == b).all()


def test_an_optimizer_made_outside_a_strategy_is_recreated_under_it():
    import keras

    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    outside = keras.optimizers.Adam(0.003)
    placed = strategy.place_optimizer(outside, one_device)
    assert placed is not outside and float(placed.learning_rate) == pytest.approx(0.003)
    with one_device.scope():
        inside = keras.optimizers.SGD()
    assert strategy.place_optimizer(inside, one_device) is inside
    assert strategy.place_optimizer("adam", one_device) == "adam"
