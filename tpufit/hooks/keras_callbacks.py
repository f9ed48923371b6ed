"""The hook that runs Keras callbacks in a tpufit run.

Keras callbacks reach a run through one hook, `KerasCallbackHook`, which calls
them through Keras's own `keras.callbacks.CallbackList` at these points:

| hook event             | fit                   | evaluate, validation  | predict                 |
| ---------------------- | --------------------- | --------------------- | ----------------------- |
| `after_create_session` | `on_train_begin`      | `on_test_begin`       | `on_predict_begin`      |
| `epoch_begin`          | `on_epoch_begin`      |                       |                         |
| `before_run`           | `on_train_batch_begin`| `on_test_batch_begin` | `on_predict_batch_begin`|
| `after_run`            | `on_train_batch_end`  | `on_test_batch_end`   | `on_predict_batch_end`  |
| `epoch_end`            | `on_epoch_end`        |                       |                         |
| `end` (no error)       | `on_train_end`        | `on_test_end`         | `on_predict_end`        |

Batch events get `(first)` at `before_run` and `(last, logs)` at `after_run`;
predict's `logs` are `{"outputs": the loop's predictions}`.
`first` and `last` are the indices, within the epoch, of the loop's first and
last step, so a callback counting batches (`ModelCheckpoint(save_freq=N)`)
counts every step once. `on_train_begin` runs once the variables exist (a
`BackupAndRestore` can load its backup then, and its `initial_epoch` is
honoured). The `*_end` events of a run that an exception ended are not called,
as in Keras (a `BackupAndRestore` keeps its backup for the next run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import keras

from tpufit import _keras_shim
from tpufit.hooks.base import Hook, Run, RunContext, RunValues

_KERAS_MODE = {"train": "train", "eval": "test", "predict": "predict"}


class KerasCallbackHook(Hook):
    """Runs Keras callbacks at a run's hook events (see the module's table).

    Args:
        callbacks: The user's Keras callbacks.
        model: The user's Keras model: what `callback.model` is.
        verbose: Keras's `verbose`, handed to the callbacks' `params`.
        epochs: Epochs of the run (1 outside `fit`).
        steps: Steps per epoch, when known.
        user_weights: A context manager factory in which the user's model
            holds the current weights (and weights set in it reach the replicas).
    """

    def __init__(
        self,
        callbacks: list[keras.callbacks.Callback],
        model: keras.Model,
        *,
        verbose: int,
        epochs: int,
        steps: int | None,
        user_weights: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.callback_list = keras.callbacks.CallbackList(
            callbacks, model=model, verbose=verbose, epochs=epochs, steps=steps
        )
        self._model = model
        self._user_weights = user_weights

    def _call(self, mode: str, event: str, *args: Any) -> None:
        with self._user_weights():
            getattr(self.callback_list, event.format(_KERAS_MODE[mode]))(*args)

    def after_create_session(self, run: Run) -> None:  # noqa: D102 - see the module's table.
        self._call(run.mode, "on_{}_begin")
        if run.mode == "train":
            resumed = _keras_shim.take_initial_epoch(self._model)
            if resumed:
                run.initial_epoch = resumed

    def epoch_begin(self, run: Run, epoch: int) -> None:  # noqa: D102
        if run.mode == "train":
            self._call("train", "on_epoch_begin", epoch)

    def before_run(self, ctx: RunContext) -> None:  # noqa: D102
        self._call(ctx.mode, "on_{}_batch_begin", ctx.first_step)

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        logs = {"outputs": values.outfeed["outputs"]} if ctx.mode == "predict" else values.logs
        self._call(ctx.mode, "on_{}_batch_end", ctx.last_step, dict(logs))

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:  # noqa: D102
        if run.mode == "train":
            self._call("train", "on_epoch_end", epoch, logs)

    def end(self, run: Run) -> None:  # noqa: D102
        if run.error is not None:
            return
        if run.mode == "predict":
            self._call("predict", "on_predict_end")
        else:
            self._call(run.mode, "on_{}_end", run.logs)
