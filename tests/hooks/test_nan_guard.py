"""The NaN guard: `fit` stops at the exact step whose loss (or gradients) is not finite.

A model on Keras's own `train_step` is left exactly as plain Keras leaves it
after the steps before that one (weights, optimizer state and iterations);
a model's own `train_step` has applied the step, and the error says so.
`RunConfig(nan_guard=False)` and `keras.callbacks.TerminateOnNaN` give Keras's
own behaviour.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import (
    FEATURES,
    compile_args,
    copy_model,
    keras_twin,
    own_step_model,
    tiny_data,
    tiny_model,
)

import tpufit
from tpufit.config import Layout

ROWS, BATCH, LOOP = 80, 8, 4
BAD_ROW = 44  # In step 6 (rows 40-47): the second step of the second loop of 4.
BAD_STEP = BAD_ROW // BATCH + 1
FIT = dict(batch_size=BATCH, epochs=2, shuffle=False, verbose=0)


def nan_row_data() -> tuple[np.ndarray, np.ndarray]:
    x, y = tiny_data(ROWS)
    x[BAD_ROW] = np.nan
    return x, y


def guarded(model: keras.Model, optimizer=None, **config) -> tpufit.TPUModel:
    """A TPUModel of `model` with XLA (as Keras's `jit_compile=True`), compiled like the tests."""
    tm = tpufit.TPUModel(model, config=tpufit.RunConfig(iterations_per_loop=LOOP, **config))
    tm.compile(**dict(compile_args(), optimizer=optimizer or keras.optimizers.SGD(0.1)))
    return tm


def keras_before_the_bad_step(model: keras.Model, x, y, optimizer) -> keras.Model:
    """Plain Keras on the same initial weights, trained on the batches before the bad one."""
    twin = keras_twin(model, **dict(compile_args(), optimizer=optimizer, jit_compile=True))
    twin.fit(x[: (BAD_STEP - 1) * BATCH], y[: (BAD_STEP - 1) * BATCH], **dict(FIT, epochs=1))
    return twin


def assert_same_state(ours: keras.Model, theirs: keras.Model) -> None:
    """Weights (non-trainable too), optimizer variables and iterations agree to 1e-6."""
    for mine, keras_value in zip(ours.weights, theirs.weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), keras_value.numpy(), rtol=0, atol=1e-6)
    for mine, keras_value in zip(ours.optimizer.variables, theirs.optimizer.variables, strict=True):
        np.testing.assert_allclose(mine.numpy(), keras_value.numpy(), rtol=0, atol=1e-6)
    assert int(ours.optimizer.iterations) == int(theirs.optimizer.iterations) == BAD_STEP - 1


@pytest.mark.parametrize("optimizer", [keras.optimizers.SGD, keras.optimizers.Adam])
def test_a_nan_row_stops_fit_at_its_step_leaving_keras_weights_from_before_it(optimizer):
    x, y = nan_row_data()
    model = tiny_model()
    theirs = keras_before_the_bad_step(model, x, y, optimizer(0.01))
    tm = guarded(model, optimizer(0.01))
    with pytest.raises(tpufit.NonFiniteLossError) as raised:
        tm.fit(x, y, **FIT)
    assert raised.value.step == BAD_STEP and np.isnan(raised.value.loss)
    message = str(raised.value)
    assert f"at global step {BAD_STEP} (step 2 of the loop that started after global step 4)" in (
        message
    )
    assert f"are those after global step {BAD_STEP - 1}" in message
    assert message.endswith(f"Received: loss=nan at step={BAD_STEP}")
    assert tm.global_step == BAD_STEP - 1
    assert_same_state(model, theirs)
    assert np.isfinite(tm.predict(x[:BAD_ROW], batch_size=BATCH, verbose=0)).all()


class SqrtAbs(keras.layers.Layer):
    """sqrt(|x|): finite at 0, its gradient there is not."""

    def call(self, x):
        return keras.ops.sqrt(keras.ops.abs(x))


def test_non_finite_gradients_of_a_finite_loss_stop_fit_too():
    # A zero row gives the first layer (no bias) an output of 0, where sqrt's gradient is
    # infinite: the loss stays finite, Keras's weights would turn NaN.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, use_bias=False),
            SqrtAbs(),
            keras.layers.Dense(3),
        ]
    )
    x, y = tiny_data(ROWS)
    x[BAD_ROW] = 0.0
    theirs = keras_before_the_bad_step(model, x, y, keras.optimizers.SGD(0.01))
    tm = guarded(model, keras.optimizers.SGD(0.01))
    with pytest.raises(tpufit.NonFiniteLossError, match="the gradients became NaN") as raised:
        tm.fit(x, y, **FIT)
    assert raised.value.step == BAD_STEP and np.isfinite(raised.value.loss)
    assert tm.layouts["train"].layout is Layout.TRUE_SIZE  # tpufit's copy of Keras's step
    assert_same_state(model, theirs)


def test_batch_normalization_keeps_its_moving_statistics_from_before_the_bad_step():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.Dense(3),
        ]
    )
    x, y = nan_row_data()
    theirs = keras_before_the_bad_step(model, x, y, keras.optimizers.Adam(0.01))
    tm = guarded(model, keras.optimizers.Adam(0.01))
    with pytest.raises(tpufit.NonFiniteLossError) as raised:
        tm.fit(x, y, **FIT)
    assert raised.value.step == BAD_STEP and tm.global_step == BAD_STEP - 1
    assert tm.layouts["train"].layout is Layout.TRUE_SIZE
    assert_same_state(model, theirs)  # the moving statistics are among the weights
    assert np.isfinite(tm.predict(x[:BAD_ROW], batch_size=BATCH, verbose=0)).all()


def test_the_guard_also_stops_in_the_first_step_and_with_a_model_dir(tmp_path):
    x, y = tiny_data(ROWS)
    x[3] = np.nan
    model = tiny_model()
    initial = [w.copy() for w in model.get_weights()]
    tm = guarded(model, model_dir=str(tmp_path), save_checkpoints_secs=None)
    with pytest.raises(tpufit.NonFiniteLossError) as raised:
        tm.fit(x, y, **FIT)
    assert raised.value.step == 1 and tm.global_step == 0
    for after, before in zip(model.get_weights(), initial, strict=True):
        np.testing.assert_array_equal(after, before)
    assert not any(name.startswith("ckpt") for name in (p.name for p in tmp_path.iterdir()))


def test_an_own_train_step_error_says_its_weights_hold_the_bad_step():
    model = own_step_model()
    x, _ = nan_row_data()
    y = np.nan_to_num(x).sum(axis=1, keepdims=True)
    tm = tpufit.TPUModel(model, iterations_per_loop=LOOP)
    tm.compile(optimizer=keras.optimizers.SGD(0.01))
    with pytest.raises(tpufit.NonFiniteLossError) as raised:
        tm.fit(x, y, **FIT)
    assert raised.value.step == BAD_STEP
    assert f"weights hold the result of global step {BAD_STEP}" in str(raised.value)
    # The loop ended right after the bad step: no later step ran.
    assert tm.global_step == BAD_STEP == int(model.optimizer.iterations)
    assert not all(np.isfinite(w).all() for w in model.get_weights())


def test_a_guard_that_does_not_fail_stops_the_run_at_the_epoch_end():
    x, y = nan_row_data()
    guard = tpufit.NanGuardHook(fail=False)
    tm = guarded(tiny_model())
    history = tm.fit(x, y, hooks=[guard], **FIT)
    assert guard.bad_step == BAD_STEP and tm.global_step == BAD_STEP - 1
    assert history.epoch == [0] and np.isfinite(history.history["loss"]).all()


def test_nan_guard_false_trains_on_as_keras_does():
    x, y = nan_row_data()
    model = tiny_model()
    twin = keras_twin(model, jit_compile=True, **compile_args())
    tm = guarded(model, nan_guard=False)
    history = tm.fit(x, y, **FIT)
    keras_history = twin.fit(x, y, **FIT)
    assert tm.global_step == 2 * ROWS // BATCH
    np.testing.assert_allclose(history.history["loss"], keras_history.history["loss"])
    assert np.isnan(history.history["loss"]).all()
    for mine, theirs in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs)  # NaN where Keras has NaN
    assert not all(np.isfinite(w).all() for w in model.get_weights())


def test_terminate_on_nan_gets_keras_meaning_the_loop_ends_and_no_error():
    x, y = nan_row_data()
    model = tiny_model()
    tm = guarded(model)
    history = tm.fit(x, y, callbacks=[keras.callbacks.TerminateOnNaN()], **FIT)
    assert tm.global_step == 2 * LOOP  # the loop holding the bad step ran to its end
    assert history.epoch == [0]
    assert not all(np.isfinite(w).all() for w in model.get_weights())


def test_nan_guard_must_be_a_bool():
    with pytest.raises(tpufit.InvalidTypeError, match="Received: nan_guard='yes'"):
        tpufit.RunConfig(nan_guard="yes")
    assert tpufit.RunConfig(nan_guard=np.bool_(False)).nan_guard is False


def test_a_guarded_and_an_unguarded_fit_keep_one_program_each():
    x, y = tiny_data(ROWS)
    model = tiny_model()
    reference = copy_model(model)
    tm = guarded(model)
    tm.fit(x, y, **FIT)
    tm.fit(x, y, callbacks=[keras.callbacks.TerminateOnNaN()], **FIT)
    tm.fit(x, y, **FIT)
    assert tm.traces["train"] == 2
    twin = keras_twin(reference, jit_compile=True, **compile_args())
    twin.fit(x, y, **dict(FIT, epochs=6))
    for mine, theirs in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5)
