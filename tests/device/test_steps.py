"""Which models run on tpufit's padded steps, and that those equal Keras's steps."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from conftest import compile_args, copy_model, tiny_data, tiny_model

from tpufit.data import padding
from tpufit.device import steps


class OwnTrainStep(keras.Sequential):
    def train_step(self, data):
        return super().train_step(data)


class OwnLoss(keras.Sequential):
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return keras.ops.mean((y_pred - y) ** 2)


def test_plain_models_use_padded_steps_in_train_and_eval():
    model = tiny_model()
    model.compile(**compile_args())
    assert steps.uses_keras_steps(model, "train") and steps.uses_keras_steps(model, "eval")


def test_an_overridden_step_or_loss_or_a_sum_loss_runs_unpadded():
    own_step = OwnTrainStep([keras.Input((3,)), keras.layers.Dense(1)])
    own_step.compile(optimizer="sgd", loss="mse")
    assert not steps.uses_keras_steps(own_step, "train")
    assert steps.uses_keras_steps(own_step, "eval")
    own_loss = OwnLoss([keras.Input((3,)), keras.layers.Dense(1)])
    own_loss.compile(optimizer="sgd", loss="mse")
    assert not steps.uses_keras_steps(own_loss, "eval")
    summed = tiny_model()
    summed.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError(reduction="sum"))
    assert not steps.uses_keras_steps(summed, "train")


def test_padded_train_step_on_a_padded_batch_equals_keras_on_the_real_rows():
    x, y = tiny_data(5)
    ours = tiny_model()
    ours.compile(**compile_args())
    theirs = copy_model(ours)
    theirs.compile(**compile_args())
    (px, py), signals = padding.pad_batch((tf.constant(x), tf.constant(y)), 8)
    ours.optimizer.build(ours.trainable_variables)
    logs, step_loss, padding_rows, _ = steps.padded_train_step(ours, (px, py), signals)
    keras_logs = theirs.train_on_batch(x, y, return_dict=True)
    for mine, reference in zip(ours.get_weights(), theirs.get_weights(), strict=False):
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(logs["loss"]), keras_logs["loss"], rtol=1e-5)
    np.testing.assert_allclose(float(step_loss), keras_logs["loss"], rtol=1e-5)
    assert float(padding_rows) == 3.0
