"""Tests of tpufit/run/arguments.py: the model and epochs checks raise tpufit errors."""

from __future__ import annotations

import pytest
import tensorflow as tf
from conftest import tiny_model

import tpufit
from tpufit.run import arguments as validation

# --- check_keras_model ---------------------------------------------------------------


def test_keras_model_passes_through():
    model = tiny_model()
    assert validation.check_keras_model(model) is model


class NotAModel:
    def __call__(self, x):
        return x


@pytest.mark.parametrize("value", [NotAModel(), object(), tf.Module(), None, "model.keras"])
def test_non_keras_model_is_an_invalid_type_error_naming_model(value):
    with pytest.raises(tpufit.InvalidTypeError) as info:
        validation.check_keras_model(value)
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert "`model`" in message
    assert "Keras 3" in message and "keras.Model" in message
    assert f"of type {type(value).__name__}" in message


# --- check_epochs --------------------------------------------------------------------


def test_valid_epochs_pass():
    validation.check_epochs(3, 0)
    validation.check_epochs(3, 2)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, "3"])
def test_bad_epochs_is_an_error_naming_epochs(epochs):
    with pytest.raises(tpufit.InvalidArgumentError, match=r"`epochs`.*epochs="):
        validation.check_epochs(epochs, 0)


@pytest.mark.parametrize("initial_epoch", [-1, 3, 5, 1.0, None])
def test_initial_epoch_outside_the_epochs_is_an_error_with_the_range(initial_epoch):
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_epochs(3, initial_epoch)
    message = str(info.value)
    assert "`initial_epoch`" in message
    assert "[0, epochs=3)" in message
    assert f"initial_epoch={initial_epoch!r}" in message
