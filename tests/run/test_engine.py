"""The engine's checks around a run, compared with what Keras does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import compile_args, keras_twin, tiny_data, tiny_model

import tpufit


@pytest.mark.parametrize("nan_guard", [True, False])
def test_a_model_without_trainable_weights_warns_at_the_users_line_and_keeps_its_weights(
    nan_guard,
):
    model = tiny_model()
    model.trainable = False
    tm = tpufit.TPUModel(model, iterations_per_loop=4, config=tpufit.RunConfig(nan_guard=nan_guard))
    tm.compile(**compile_args())
    twin = keras_twin(model)
    x, y = tiny_data(12)
    before = model.get_weights()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = tm.fit(x, y, batch_size=4, epochs=2, verbose=0)
    expected = twin.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)

    ours = [w for w in caught if "does not have any trainable weights" in str(w.message)]
    assert ours and all(w.filename == __file__ for w in ours)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)
    for left, right in zip(tm.model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(left, right)
