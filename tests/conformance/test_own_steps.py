"""Conformance: keras.io's "Customizing what happens in fit()" patterns give Keras's results.

Each case is plain Keras code, run once through `tpufit.attach` and once in
plain Keras from the same weights, and compared.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from conftest import FEATURES, tiny_data

import tpufit


class CustomStepModel(keras.Model):
    """keras.io's first example: `compute_loss`, then every metric's result, nested as in Keras."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        loss = self.compute_loss(y=y, y_pred=y_pred)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def build(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,))
    return CustomStepModel(inputs, keras.layers.Dense(1)(inputs))


def twins():
    ours, theirs = build(), build()
    theirs.set_weights(ours.get_weights())
    for model in (ours, theirs):
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    tpufit.attach(ours, iterations_per_loop=3)
    return ours, theirs


def test_an_own_step_returning_nested_metric_results_trains_and_logs_as_keras():
    x, y = tiny_data(96)
    y = y.astype("float32")[:, None]
    ours, theirs = twins()
    mine = ours.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    keras_history = theirs.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert sorted(mine.history) == sorted(keras_history.history) == ["loss", "mae"]
    for name, values in keras_history.history.items():
        np.testing.assert_allclose(mine.history[name], values, rtol=1e-5)
    np.testing.assert_allclose(
        ours.evaluate(x, y, batch_size=16, verbose=0),
        theirs.evaluate(x, y, batch_size=16, verbose=0),
        rtol=1e-5,
    )
    for mine_w, theirs_w in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(mine_w, theirs_w, rtol=1e-5, atol=1e-6)
