"""Tests of tpufit/attach.py: plain Keras calls routed through tpufit give Keras's results."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import assert_same_weights, compile_args, copy_model, tiny_data, tiny_model

import tpufit


def test_an_attached_models_own_calls_run_through_tpufit_with_keras_results():
    x, y = tiny_data(100)
    model = tiny_model()
    twin = copy_model(model)
    tm = tpufit.attach(model, iterations_per_loop=3)
    model.compile(**compile_args())
    twin.compile(**compile_args())
    ours = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    theirs = twin.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert tm.global_step == 14 and tm.traces["train"] == 1  # it ran through tpufit
    for name in theirs.history:
        np.testing.assert_allclose(ours.history[name], theirs.history[name], rtol=1e-5)
    assert_same_weights(model, twin)
    np.testing.assert_allclose(
        model.evaluate(x, y, batch_size=32, verbose=0),
        twin.evaluate(x, y, batch_size=100, verbose=0),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        model.predict(x, batch_size=32, verbose=0), twin.predict(x, verbose=0), atol=1e-6
    )


def test_a_model_compiled_before_attaching_keeps_its_compile_arguments():
    x, y = tiny_data(64)
    model = tiny_model()
    model.compile(**compile_args())
    tm = tpufit.attach(model, iterations_per_loop=4)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "accuracy"} and tm.traces == {"eval": 1}


def test_detach_gives_the_model_kerass_own_methods_back():
    model = tiny_model()
    tm = tpufit.attach(model)
    assert tpufit.attach.__module__ == "tpufit.attach" and model.fit == tm.fit
    tpufit.detach(model)
    assert "fit" not in vars(model) and model.fit.__func__ is type(model).fit
    x, y = tiny_data(32)
    model.compile(**compile_args())
    model.fit(x, y, verbose=0)
    assert tm.global_step == 0


def test_attaching_twice_or_detaching_a_model_never_attached_is_a_tpufit_error():
    model = tiny_model()
    tpufit.attach(model)
    with pytest.raises(tpufit.InvalidArgumentError, match="already attached"):
        tpufit.attach(model)
    tpufit.detach(model)
    with pytest.raises(tpufit.InvalidArgumentError, match="Received: model='Sequential'"):
        tpufit.detach(model)


def test_compiling_before_or_after_attaching_gives_the_same_weights():
    x, y = tiny_data(64)
    weights = []
    for compile_first in (True, False):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(3),
            ]
        )
        if compile_first:
            model.compile(**compile_args())
            tpufit.attach(model, iterations_per_loop=4)
        else:
            tpufit.attach(model, iterations_per_loop=4)
            model.compile(**compile_args())
        keras.utils.set_random_seed(1)
        model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for before, after in zip(*weights, strict=True):
        np.testing.assert_array_equal(before, after)
