"""Choosing the strategy and placing the model under it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASSES, FEATURES, tiny_model

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


class CallCounter(keras.layers.Layer):
    """Counts the calls that run on data, in a variable as Keras's BackupAndRestore tests do."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int32")

    def call(self, x):
        self.calls.assign_add(1)
        return x


def counting_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((FEATURES,)), CallCounter(), keras.layers.Dense(CLASSES)])


def test_building_state_runs_no_layer_on_data():
    model = counting_model()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    spec = (tf.TensorSpec((4, FEATURES)), tf.TensorSpec((4, CLASSES)))

    strategy.build_state(
        model, tf.distribute.get_strategy(), spec, build_metrics=True, build_optimizer=True
    )

    assert int(model.layers[0].calls.numpy()) == 0
    assert model.optimizer.built
    assert [metric.name for metric in model.metrics] == ["loss", "compile_metrics"]
    assert all(metric.variables for metric in model.metrics)


def test_fit_calls_the_layers_as_often_as_keras():
    x = np.random.default_rng(0).normal(size=(24, FEATURES)).astype("float32")
    y = np.random.default_rng(1).normal(size=(24, CLASSES)).astype("float32")
    counts = []
    for attach in (False, True):
        model = counting_model()
        if attach:
            tpufit.attach(model, iterations_per_loop=3)
        model.compile(optimizer="sgd", loss="mse", metrics=["mae"], steps_per_execution=3)
        model.fit(x, y, batch_size=4, epochs=2, verbose=0)
        model.evaluate(x, y, batch_size=4, verbose=0)
        counts.append(int(model.layers[0].calls.numpy()))
    assert counts[0] == counts[1] == 2 * 6 + 6


class Doubler(keras.Model):
    """A subclassed model nobody built: its layers get their weights from the first batch."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(CLASSES)

    def call(self, x):
        return self.dense(x) * 2.0


def test_an_unbuilt_subclassed_model_is_built_from_the_batch_shape():
    keras.utils.set_random_seed(0)
    model = Doubler()
    model.compile(optimizer="sgd", loss="mse")
    spec = (tf.TensorSpec((None, FEATURES)), tf.TensorSpec((None, CLASSES)))

    strategy.build_state(
        model, tf.distribute.get_strategy(), spec, build_metrics=True, build_optimizer=True
    )

    assert model.built
    assert model.dense.kernel.shape == (FEATURES, CLASSES)


class OnlySteps(keras.Model):
    """The keras.io GAN's shape: sub-models, its own train_step, no call()."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_model()

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(self.inner(x) - y))
        grads = tape.gradient(loss, self.inner.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.inner.trainable_weights, strict=True))
        return {"loss": loss}


def test_a_model_without_call_is_left_to_its_own_steps():
    model = OnlySteps()
    model.compile(optimizer="sgd")
    spec = (tf.TensorSpec((4, FEATURES)), tf.TensorSpec((4, CLASSES)))

    strategy.build_state(
        model, tf.distribute.get_strategy(), spec, build_metrics=False, build_optimizer=True
    )

    assert model.optimizer.built
