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

Weights. When the strategy runs a clone of the user's model (one built
outside a non-default strategy's scope), `callback.model` (the user's model)
holds its own copy of the weights, and copying every weight each way at
every event would cost more than the event. So:

- the user's model gets the replicas' current weights before an event only
  when some callback *handles* it: the method it has for the event (or, for
  a train batch event, Keras's older `on_batch_begin` / `on_batch_end`,
  which the base class's train batch methods call) is not
  `keras.callbacks.Callback`'s own. It is looked up on the callback itself,
  so `LambdaCallback`'s functions count. `CallbackList` calls every callback
  at every event, but the base class's methods do nothing, so at an event
  no callback handles, no callback can read or set a weight;
- after an event that was copied for, the weights go back to the replicas
  unless the user's model holds them bit for bit as they came
  (`Replicas.user_weights`): `EarlyStopping` restoring the best weights, a
  `BackupAndRestore`, `SwapEMAWeights` or a callback's own `set_weights`
  reach the next loop; a callback that only reads them (`ModelCheckpoint`,
  a logger) costs one copy and one comparison.

With only `History` (which handles `on_train_begin` and `on_epoch_end`), a
loop's batch events copy nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import keras

from tpufit import _keras_shim
from tpufit.hooks.base import Hook, Run, RunContext, RunValues

_KERAS_MODE = {"train": "train", "eval": "test", "predict": "predict"}
# The older names that `keras.callbacks.Callback`'s train batch methods call.
_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


def handles(callback: keras.callbacks.Callback, event: str) -> bool:
    """Whether `callback` does anything at `event`: overrides it (see the module's docstring).

    Args:
        callback: A Keras callback.
        event: The name of a `keras.callbacks.Callback` method.
    """
    names = (event, _ALIASES[event]) if event in _ALIASES else (event,)
    for name in names:
        own = getattr(callback, name)
        if getattr(own, "__func__", None) is not getattr(keras.callbacks.Callback, name):
            return True
    return False


class KerasCallbackHook(Hook):
    """Runs Keras callbacks at a run's hook events (see the module's table).

    Args:
        callbacks: The user's Keras callbacks.
        model: The user's Keras model: what `callback.model` is.
        verbose: Keras's `verbose`, handed to the callbacks' `params`.
        epochs: Epochs of the run (1 outside `fit`).
        steps: Steps per epoch, when known.
        user_weights: A context manager factory in which the user's model
            holds the current weights (and weights set in it reach the
            replicas), entered only for events some callback handles.
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
        self._handled: dict[str, bool] = {}  # Per event: whether some callback handles it.

    def _call(self, mode: str, event: str, *args: Any) -> None:
        name = event.format(_KERAS_MODE[mode])
        if name not in self._handled:
            self._handled[name] = any(handles(c, name) for c in self.callback_list.callbacks)
        if not self._handled[name]:
            getattr(self.callback_list, name)(*args)
            return
        with self._user_weights():
            getattr(self.callback_list, name)(*args)

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
