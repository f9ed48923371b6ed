"""Tests of tpufit/run/limits.py: `keras.config`'s epoch and step caps, honoured as Keras does."""

from __future__ import annotations

import keras
import pytest
from conftest import assert_close, side_by_side, tiny_data, warned

X, Y = tiny_data(80)  # 10 batches of 8


@pytest.fixture
def caps():
    keras.config.set_max_epochs(2)
    keras.config.set_max_steps_per_epoch(3)
    yield
    keras.config.set_max_epochs(None)
    keras.config.set_max_steps_per_epoch(None)


class Steps(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.trained = self.validated = 0

    def on_train_batch_end(self, batch, logs=None):
        self.trained += 1

    def on_test_batch_end(self, batch, logs=None):
        self.validated += 1


def test_fit_evaluate_and_predict_are_capped_with_keras_warnings(caps):
    def body(model):
        steps = Steps()
        history = model.fit(
            X, Y, batch_size=8, epochs=4, validation_data=(X, Y), shuffle=False, verbose=0,
            callbacks=[steps],
        )  # fmt: skip
        loss = model.evaluate(X, Y, batch_size=8, verbose=0)
        rows = len(model.predict(X, batch_size=8, verbose=0))
        return history.history, (steps.trained, steps.validated), loss, rows

    theirs, ours = side_by_side(body)
    assert_close(ours.result, theirs.result)
    assert theirs.result[1] == (2 * 3, 2 * 3) and theirs.result[3] == 3 * 8
    limiting = warned(theirs, "Limiting")
    assert limiting == ["Limiting epochs to 2"] + ["Limiting steps_per_epoch to 3"] * 4
    assert warned(ours, "Limiting") == limiting


def test_steps_and_epochs_under_the_caps_stay_as_given_without_a_warning(caps):
    def body(model):
        fit_args = dict(batch_size=8, epochs=1, steps_per_epoch=2, shuffle=False)
        history = model.fit(X, Y, **fit_args, verbose=0)
        return history.history["loss"], model.evaluate(X, Y, batch_size=8, steps=1, verbose=0)

    theirs, ours = side_by_side(body, iterations_per_loop=4)
    assert_close(ours.result, theirs.result)
    assert warned(ours, "Limiting") == warned(theirs, "Limiting") == []
