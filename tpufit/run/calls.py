"""What the user asked of one `fit`, `evaluate` or `predict` call, after the front door's checks.

The front door (`tpufit.model.TPUModel`) checks the arguments and packs them
into one of these; `tpufit.run.engine.Engine` builds and runs the call from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from tpufit.hooks.base import Hook


@dataclasses.dataclass(frozen=True)
class FitCall:
    """`fit`'s arguments, with Keras's meanings; `drop_remainder`, `hooks`, `max_steps` added."""

    x: Any
    y: Any = None
    sample_weight: Any = None
    batch_size: int | None = None
    epochs: int = 1
    verbose: int = 1
    callbacks: tuple[keras.callbacks.Callback, ...] = ()
    validation_data: Any = None
    shuffle: bool = True
    class_weight: Any = None
    initial_epoch: int = 0
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    validation_batch_size: int | None = None
    validation_freq: int = 1
    drop_remainder: bool = False
    hooks: tuple[Hook, ...] = ()
    max_steps: int | None = None


@dataclasses.dataclass(frozen=True)
class EvaluateCall:
    """`evaluate`'s arguments, with Keras's meanings; `hooks` added."""

    x: Any
    y: Any = None
    sample_weight: Any = None
    batch_size: int | None = None
    verbose: int = 1
    steps: int | None = None
    callbacks: tuple[keras.callbacks.Callback, ...] = ()
    hooks: tuple[Hook, ...] = ()


@dataclasses.dataclass(frozen=True)
class PredictCall:
    """`predict`'s arguments, with Keras's meanings; `hooks` added."""

    x: Any
    batch_size: int | None = None
    verbose: int = 1
    steps: int | None = None
    callbacks: tuple[keras.callbacks.Callback, ...] = ()
    hooks: tuple[Hook, ...] = ()
