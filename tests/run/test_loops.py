"""Tests of tpufit/run/loops.py: the loops' stops and warnings, against plain Keras.

Keras reads `model.stop_training`, `stop_evaluating` and `stop_predicting`
after every execution of `steps_per_execution` batches; tpufit after every
loop. With one equal to the other, a callback stopping a loop of plain Keras
code stops the same step through `tpufit.attach`.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASSES, Stopper, assert_close, side_by_side, tiny_data, warned

X, Y = tiny_data(80)  # 10 batches of 8
RAN_OUT = "Your input ran out of data"


def endless(targets: bool = True):
    """Batches of 8 rows, over and over."""
    for start in itertools.cycle(range(0, len(X), 8)):
        rows = slice(start, start + 8)
        yield (X[rows], Y[rows]) if targets else (X[rows],)


def repeated_dataset():
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(8).repeat()


@pytest.mark.parametrize("source", [endless, repeated_dataset])
@pytest.mark.parametrize("per_loop", [1, 3])
def test_stop_training_ends_an_endless_fit_without_steps_per_epoch(source, per_loop):
    def body(model):
        stopper = Stopper("on_train_batch_end", "stop_training", after=4)
        history = model.fit(source(), epochs=3, callbacks=[stopper], verbose=0)
        return history.history, stopper.calls

    theirs, ours = side_by_side(body, iterations_per_loop=per_loop, steps_per_execution=per_loop)
    assert_close(ours.result, theirs.result)
    assert_close(ours.model.get_weights(), theirs.model.get_weights())
    assert len(ours.result[0]["loss"]) == 1  # the one endless epoch, stopped


@pytest.mark.parametrize("per_loop", [1, 2])
def test_stop_evaluating_ends_evaluate_at_the_next_loop_boundary(per_loop):
    def body(model):
        stopper = Stopper("on_test_batch_end", "stop_evaluating", after=3)
        logs = model.evaluate(endless(), callbacks=[stopper], return_dict=True, verbose=0)
        return logs, stopper.calls

    theirs, ours = side_by_side(body, iterations_per_loop=per_loop, steps_per_execution=per_loop)
    assert_close(ours.result, theirs.result)
    assert ours.model.stop_evaluating == theirs.model.stop_evaluating  # left set, as in Keras


@pytest.mark.parametrize("source", ["arrays", "endless"])
def test_stop_predicting_returns_the_rows_predicted_so_far(source):
    def body(model):
        stopper = Stopper("on_predict_batch_end", "stop_predicting", after=2)
        x = X if source == "arrays" else endless(targets=False)
        return model.predict(x, batch_size=8, callbacks=[stopper], verbose=0), stopper.calls

    theirs, ours = side_by_side(body, iterations_per_loop=2, steps_per_execution=2)
    assert theirs.result[0].shape == (2 * 2 * 8, CLASSES)
    assert_close(ours.result, theirs.result)


def test_a_stop_flag_left_set_by_the_last_run_does_not_stop_the_next():
    def body(model):
        model.stop_evaluating = model.stop_predicting = True
        loss = model.evaluate(X, Y, batch_size=8, verbose=0)
        return loss, len(model.predict(X, batch_size=8, verbose=0))

    theirs, ours = side_by_side(body, iterations_per_loop=2)
    assert_close(ours.result, theirs.result)
    assert theirs.result[1] == len(X)


@pytest.mark.parametrize("steps", [3, 10, 14])
def test_evaluate_and_predict_steps_against_keras_warning_where_the_data_ends_first(steps):
    def body(model):
        on_arrays = model.evaluate(X, Y, batch_size=8, steps=steps, verbose=0)
        on_endless = model.evaluate(endless(), steps=steps, verbose=0)
        predicted = model.predict(X, batch_size=8, steps=steps, verbose=0)
        return on_arrays, on_endless, predicted

    theirs, ours = side_by_side(body, iterations_per_loop=4)
    assert_close(ours.result, theirs.result)
    assert len(ours.result[2]) == min(steps, 10) * 8
    assert warned(ours, RAN_OUT) == warned(theirs, RAN_OUT)
    assert len(warned(ours, RAN_OUT)) == 2 * (steps > 10)


def test_evaluate_steps_covering_the_data_include_its_partial_batch_at_true_size():
    def batch_norm_model():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((X.shape[1],)),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(CLASSES),
            ]
        )

    x, y = X[:76], Y[:76]  # 9 full batches of 8 and one of 4

    def body(model):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # moving statistics
        return [model.evaluate(x, y, batch_size=8, steps=s, verbose=0) for s in (9, 10, 12)]

    theirs, ours = side_by_side(body, iterations_per_loop=4, make_model=batch_norm_model)
    assert_close(ours.result, theirs.result)
    assert not np.allclose(ours.result[0], ours.result[1])  # step 10 is the partial batch
    assert len(warned(ours, RAN_OUT)) == len(warned(theirs, RAN_OUT)) == 1


@pytest.mark.parametrize("validation_steps", [3, 14])
def test_validation_steps_read_the_first_steps_of_the_validation_data_every_epoch(
    validation_steps,
):
    def body(model):
        validation = dict(validation_data=(X, Y), validation_steps=validation_steps)
        fit_args = dict(batch_size=8, epochs=2, steps_per_epoch=4, shuffle=False)
        return model.fit(X, Y, **fit_args, **validation, verbose=0).history

    theirs, ours = side_by_side(body, iterations_per_loop=3)
    assert_close(ours.result, theirs.result)
    assert warned(ours, RAN_OUT) == warned(theirs, RAN_OUT)
    assert len(warned(ours, RAN_OUT)) == 2 * (validation_steps > 10)
