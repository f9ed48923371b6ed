"""Keras callbacks in a tpufit run.

Callbacks run through Keras's own `keras.callbacks.CallbackList` (which adds
the progress bar), with batch events fired once per loop by
`runner.LoopTracker`: `on_*_batch_begin(first)` and `on_*_batch_end(last, logs)`
with the indices of the loop's first and last step.
"""

from __future__ import annotations

import keras

from tpufit import cluster


def callback_list_for(
    model: keras.Model,
    callbacks: list[keras.callbacks.Callback] | None,
    verbose: int | str,
    *,
    epochs: int,
    steps: int | None,
) -> keras.callbacks.CallbackList:
    """Returns the `CallbackList` of a run, with a progress bar unless `verbose=0`.

    Args:
        model: The user's model, which `callback.model` will be.
        callbacks: The user's callbacks, or `None`.
        verbose: Keras's meaning: "auto" or 1 (a bar), 2 (a line per epoch), 0;
            always 0 on a worker that is not the chief.
        epochs: Epochs the run has (1 outside `fit`).
        steps: Steps per epoch, when known (for the bar's total).
    """
    verbose = 1 if verbose == "auto" else int(verbose)
    verbose = verbose if cluster.is_chief() else 0  # One progress bar per cluster: the chief's.
    return keras.callbacks.CallbackList(
        callbacks,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
    )
