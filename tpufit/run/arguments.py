"""Checks of the front door's arguments that are not about the data (those are in data/)."""

from __future__ import annotations

from typing import Any

import keras

from tpufit import errors
from tpufit.errors import check_positive_int, is_int


def check_keras_model(model: Any) -> keras.Model:
    """Returns `model` if it is a Keras 3 model."""
    if not isinstance(model, keras.Model):
        hint = ""
        if type(model).__module__.startswith(("tf_keras", "tensorflow.python.keras")):
            hint = " (this is a Keras 2 / tf.keras model; build it with `import keras`)"
        raise errors.invalid_type("model", model, "a Keras 3 `keras.Model`" + hint)
    return model


def check_epochs(epochs: Any, initial_epoch: Any) -> None:
    """Checks `epochs` and `initial_epoch`."""
    check_positive_int("epochs", epochs)
    if not is_int(initial_epoch) or not 0 <= initial_epoch < epochs:
        raise errors.invalid_argument(
            "initial_epoch", initial_epoch, f"an int in [0, epochs={epochs})"
        )
