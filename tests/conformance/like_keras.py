"""The conformance suite's shared helper: one model built twice, one run through tpufit.

A case builds the same model twice from one seed (`keras.utils.set_random_seed`,
so the weights and the layers' random seeds match; a built model's weights are
then also copied over), attaches tpufit to the first (`ours`) and leaves the
second (`theirs`) plain Keras, runs the same plain Keras code on both and
compares what Keras returns: `fit`'s history per epoch, the final weights
(non-trainable ones included), `evaluate`'s values and `predict`'s rows.

In a test process with several logical CPUs (`TPUFIT_TEST_REPLICAS`), `ours`
is built under a `MirroredStrategy` over all of them and attached with it,
while `theirs` stays plain Keras on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from conftest import make_strategy, replicas

import tpufit

RTOL = 1e-5
ATOL = 1e-6
LOOP = 3  # iterations_per_loop of every attached model, unless a case says otherwise


def strategy():
    """The strategy `ours` runs under: all of this process's logical CPUs, or `None` for one."""
    return make_strategy() if replicas() > 1 else None


def twins(
    build: Callable[[], keras.Model],
    compile_kwargs: Callable[[], dict] | None = None,
    *,
    keras_compile: dict | None = None,
    **tpu_kwargs: Any,
) -> tuple[keras.Model, keras.Model, tpufit.TPUModel]:
    """`(ours, theirs, tm)`: `build()` twice from seed 0, `ours` attached, both compiled.

    `compile_kwargs()` gives fresh compile arguments for each model (optimizers
    are not shared); `keras_compile` adds arguments for `theirs` only (e.g.
    `steps_per_execution` to make Keras call batch callbacks per loop, as tpufit does).
    """
    run_on = strategy()
    keras.utils.set_random_seed(0)
    if run_on is None:
        ours = build()
    else:
        with run_on.scope():
            ours = build()
    keras.utils.set_random_seed(0)
    theirs = build()
    if ours.built and theirs.built and ours.weights:
        theirs.set_weights(ours.get_weights())
    tpu_kwargs.setdefault("iterations_per_loop", LOOP)
    tm = tpufit.attach(ours, strategy=run_on, **tpu_kwargs)
    if compile_kwargs is not None:
        ours.compile(**compile_kwargs())
        theirs.compile(**compile_kwargs(), **(keras_compile or {}))
    return ours, theirs, tm


def assert_same_values(mine: Any, keras_values: Any, rtol=RTOL, atol=ATOL, what="") -> None:
    """`mine` has `keras_values`'s structure (dict keys, list lengths) and values, to tolerance."""
    keras.tree.assert_same_structure(mine, keras_values)
    if isinstance(keras_values, dict):
        assert sorted(mine) == sorted(keras_values), (what, sorted(mine), sorted(keras_values))
        for name, value in keras_values.items():
            assert_same_values(mine[name], value, rtol, atol, f"{what}[{name!r}]")
        return
    for index, (left, right) in enumerate(
        zip(keras.tree.flatten(mine), keras.tree.flatten(keras_values), strict=True)
    ):
        left, right = np.asarray(left), np.asarray(right)
        assert left.shape == right.shape, (what, index, left.shape, right.shape)
        np.testing.assert_allclose(left, right, rtol=rtol, atol=atol, err_msg=f"{what} #{index}")


def assert_same_history(mine, keras_history, rtol=RTOL, atol=ATOL) -> None:
    """Two `History` objects have the same epochs, keys and per-epoch values."""
    assert isinstance(mine, keras.callbacks.History), type(mine)
    assert mine.epoch == keras_history.epoch
    assert sorted(mine.history) == sorted(keras_history.history)
    for name, values in keras_history.history.items():
        np.testing.assert_allclose(mine.history[name], values, rtol=rtol, atol=atol, err_msg=name)


def assert_same_weights(ours: keras.Model, theirs: keras.Model, rtol=RTOL, atol=ATOL) -> None:
    """Every weight, non-trainable ones (moving statistics) included, is equal."""
    assert len(ours.weights) == len(theirs.weights)
    for left, right in zip(ours.weights, theirs.weights, strict=True):
        assert left.shape == right.shape, (left.path, right.path)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(left),
            keras.ops.convert_to_numpy(right),
            rtol=rtol,
            atol=atol,
            err_msg=left.path,
        )


def fit_both(ours, theirs, *args, rtol=RTOL, atol=ATOL, **kwargs):
    """`fit` on both with the same arguments (`shuffle=False`, quiet); equal history and weights."""
    kwargs = {"shuffle": False, "verbose": 0, **kwargs}
    mine = ours.fit(*args, **kwargs)
    keras_history = theirs.fit(*args, **kwargs)
    assert_same_history(mine, keras_history, rtol, atol)
    assert_same_weights(ours, theirs, rtol, atol)
    return mine, keras_history


def evaluate_both(ours, theirs, *args, rtol=RTOL, atol=ATOL, **kwargs):
    """`evaluate` on both with the same arguments; equal structure and values."""
    kwargs = {"verbose": 0, **kwargs}
    mine = ours.evaluate(*args, **kwargs)
    keras_values = theirs.evaluate(*args, **kwargs)
    assert_same_values(mine, keras_values, rtol, atol, "evaluate")
    return mine


def predict_both(ours, theirs, *args, rtol=RTOL, atol=ATOL, **kwargs):
    """`predict` on both with the same arguments; equal structure, row for row."""
    kwargs = {"verbose": 0, **kwargs}
    mine = ours.predict(*args, **kwargs)
    keras_values = theirs.predict(*args, **kwargs)
    assert_same_values(mine, keras_values, rtol, atol, "predict")
    return mine
