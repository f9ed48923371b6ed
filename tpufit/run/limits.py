"""The debugging caps of `keras.config`: `set_max_epochs` and `set_max_steps_per_epoch`.

Keras lowers `fit`'s `epochs`, and the `steps_per_epoch` (or `steps`) of every
epoch iterator it makes (training, validation, `evaluate`, `predict`), to
these caps, with a warning each; tpufit does the same, with Keras's words.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    from tpufit.run.calls import FitCall


def epochs(epochs: int, *, stacklevel: int) -> int:
    """Returns `epochs`, lowered to `keras.config.max_epochs()` (with Keras's warning)."""
    cap = keras.config.max_epochs()
    if cap and cap < epochs:
        warnings.warn(f"Limiting epochs to {cap}", stacklevel=stacklevel + 1)
        return cap
    return epochs


def steps(steps: int | None, *, stacklevel: int) -> int | None:
    """Returns `steps`, lowered to `keras.config.max_steps_per_epoch()` (with Keras's warning).

    As in Keras, the cap also bounds an epoch that would otherwise read its
    data to the end (`steps=None`).
    """
    cap = keras.config.max_steps_per_epoch()
    if cap and (not steps or cap < steps):
        warnings.warn(f"Limiting steps_per_epoch to {cap}", stacklevel=stacklevel + 1)
        return cap
    return steps


def fit_call(call: FitCall, *, stacklevel: int) -> FitCall:
    """`call` with its epochs and steps lowered to the `keras.config` caps, as in Keras's `fit`."""
    call = dataclasses.replace(
        call,
        epochs=epochs(call.epochs, stacklevel=stacklevel),
        steps_per_epoch=steps(call.steps_per_epoch, stacklevel=stacklevel),
    )
    if call.validation_data is None:
        return call
    return dataclasses.replace(
        call, validation_steps=steps(call.validation_steps, stacklevel=stacklevel)
    )
