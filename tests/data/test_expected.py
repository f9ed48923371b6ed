"""tpufit/data/expected.py: data the model cannot take fails before any device work, named."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import compiled, tiny_data

import tpufit

# --- Through TPUModel: raised before any device work, weights unchanged -------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda tm, x, y: tm.fit(x.astype(str), y, verbose=0), tpufit.InvalidTypeError),
        (lambda tm, x, y: tm.evaluate(x[:, :5], y, verbose=0), tpufit.InvalidArgumentError),
        (lambda tm, x, y: tm.predict({"a": x}, verbose=0), tpufit.InvalidArgumentError),
        (lambda tm, x, y: tm.fit(x, y + 3, verbose=0), tpufit.InvalidArgumentError),
        (
            lambda tm, x, y: tm.fit(
                tf.data.Dataset.from_tensor_slices((x.astype(str), y)).batch(4), verbose=0
            ),
            tpufit.InvalidTypeError,
        ),
        (
            lambda tm, x, y: tm.evaluate(tf.data.Dataset.from_tensor_slices(x).batch(4), verbose=0),
            tpufit.InvalidArgumentError,
        ),
        (
            lambda tm, x, y: tm.fit(x, y, validation_data=(x, y[:, None, None, None]), verbose=0),
            tpufit.InvalidArgumentError,
        ),
    ],
)
def test_data_the_model_cannot_take_fails_before_any_device_work(call, error):
    tm = compiled()
    weights = tm.model.get_weights()
    x, y = tiny_data(10)
    with pytest.raises(error):
        call(tm, x, y)
    assert tm.traces == {} and tm.global_step == 0
    for before, after in zip(weights, tm.model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
