"""Which models run on tpufit's padded steps, that those equal Keras's steps, and mixed precision.

Mixed precision runs through tpufit's loops as TPUs run it (bfloat16) and with
float16 and loss scaling (`optimizer.scale_loss` inside the padded step).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASSES, FEATURES, compile_args, copy_model, tiny_data, tiny_model

import tpufit
from tpufit.config import Mode
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
    assert steps.uses_keras_steps(model, Mode.TRAIN) and steps.uses_keras_steps(model, Mode.EVAL)


def test_an_overridden_step_or_loss_or_a_sum_loss_runs_unpadded():
    own_step = OwnTrainStep([keras.Input((3,)), keras.layers.Dense(1)])
    own_step.compile(optimizer="sgd", loss="mse")
    assert not steps.uses_keras_steps(own_step, Mode.TRAIN)
    assert steps.uses_keras_steps(own_step, Mode.EVAL)
    own_loss = OwnLoss([keras.Input((3,)), keras.layers.Dense(1)])
    own_loss.compile(optimizer="sgd", loss="mse")
    assert not steps.uses_keras_steps(own_loss, Mode.EVAL)
    summed = tiny_model()
    summed.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError(reduction="sum"))
    assert not steps.uses_keras_steps(summed, Mode.TRAIN)


@pytest.mark.parametrize("guard", [False, True])
def test_padded_train_step_on_a_padded_batch_equals_keras_on_the_real_rows(guard):
    x, y = tiny_data(5)
    ours = tiny_model()
    ours.compile(**compile_args())
    theirs = copy_model(ours)
    theirs.compile(**compile_args())
    (px, py), signals = padding.pad_batch((tf.constant(x), tf.constant(y)), 8)
    ours.optimizer.build(ours.trainable_variables)
    logs, step_loss, padding_rows, _, non_finite = steps.padded_train_step(
        ours, (px, py), signals, guard=guard
    )
    assert not bool(non_finite)
    keras_logs = theirs.train_on_batch(x, y, return_dict=True)
    for mine, reference in zip(ours.get_weights(), theirs.get_weights(), strict=False):
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(logs["loss"]), keras_logs["loss"], rtol=1e-5)
    np.testing.assert_allclose(float(step_loss), keras_logs["loss"], rtol=1e-5)
    assert float(padding_rows) == 3.0


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def mixed_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(CLASSES, dtype="float32"),  # Keras's advice: float32 outputs
        ]
    )


@pytest.mark.parametrize(
    "policy, tolerance", [("mixed_bfloat16", 2e-2), ("mixed_float16", 1e-3)], indirect=["policy"]
)
def test_mixed_precision_trains_evaluates_and_predicts_like_keras(policy, tolerance):
    model = mixed_model()
    twin = copy_model(model)
    x, y = tiny_data(100)
    tm = tpufit.TPUModel(model, iterations_per_loop=3)
    tm.compile(**compile_args())
    twin.compile(**compile_args())
    assert model.layers[0].compute_dtype == policy.split("_")[1]
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    ours = tm.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    theirs = twin.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(ours.history["loss"], theirs.history["loss"], rtol=tolerance)
    for mine, keras_weight in zip(model.get_weights(), twin.get_weights(), strict=True):
        assert mine.dtype == np.float32  # variables stay float32
        np.testing.assert_allclose(mine, keras_weight, atol=tolerance)
    twin.set_weights(model.get_weights())
    logs = tm.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    expected = twin.evaluate(x, y, batch_size=100, return_dict=True, verbose=0)
    np.testing.assert_allclose(logs["loss"], expected["loss"], rtol=tolerance)
    predictions = tm.predict(x, batch_size=32, verbose=0)
    assert predictions.shape == (100, CLASSES)
    np.testing.assert_allclose(predictions, twin.predict(x, verbose=0), atol=5 * tolerance)
