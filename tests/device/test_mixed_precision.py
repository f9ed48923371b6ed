"""Mixed precision through tpufit's loops: bfloat16 (TPUs' policy) and float16 with loss scaling."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import CLASSES, FEATURES, compile_args, copy_model, tiny_data

import tpufit


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
