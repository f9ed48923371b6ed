"""`TPUModel`: the Keras-style front door.

It checks arguments (before any device work), asks `tpufit.run` for a run of
the mode, and returns what Keras returns: a `History` from `fit`, scalars from
`evaluate`, numpy arrays from `predict`. It orchestrates only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from tpufit import data, errors
from tpufit.config import RunConfig
from tpufit.data import checks
from tpufit.data.infeed import DEFAULT_BATCH_SIZE
from tpufit.device.layout import LayoutChoice
from tpufit.device.replicas import Replicas
from tpufit.device.strategy import resolve_strategy
from tpufit.hooks.base import Hook
from tpufit.hooks.progress_bar import verbosity
from tpufit.model_dir import export
from tpufit.model_dir.directory import ModelDir
from tpufit.run import arguments
from tpufit.run import logs as logs_module
from tpufit.run.calls import EvaluateCall, FitCall, PredictCall
from tpufit.run.engine import Engine
from tpufit.run.progress import Progress
from tpufit.run.stats import RunStats


class TPUModel:
    """Runs a Keras 3 model's `fit` / `evaluate` / `predict` as looped device programs.

    Args:
        model: Any Keras 3 model (Sequential, functional or subclassed). It
            may be built inside or outside the strategy's scope; when outside
            (and the strategy is not TensorFlow's default), tpufit rebuilds it
            under the strategy and copies the weights back after every `fit`.
        strategy: A `tf.distribute.Strategy`, or `None` / `"auto"` to pick a
            TPU, else several GPUs, else the default device.
        iterations_per_loop: Steps each device loop runs before returning to
            the host.
        model_dir: Directory for checkpoints, or `None`. A `model_dir` that
            holds a checkpoint is restored (weights, optimizer state, global
            step, epoch) before the first run, and `fit` continues from it;
            see docs/model_dir.md.
        config: A `RunConfig`; `iterations_per_loop` and `model_dir` given
            here override its values.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> tm = TPUModel(model, iterations_per_loop=10)
        >>> tm.compile(optimizer="adam", loss="mse")
        >>> history = tm.fit(np.ones((64, 4)), np.ones((64, 2)), batch_size=16,
        ...                  verbose=0)
        >>> tm.global_step
        4
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        strategy: tf.distribute.Strategy | str | None = None,
        iterations_per_loop: int | str = "auto",
        model_dir: str | None = None,
        config: RunConfig | None = None,
    ) -> None:
        self.model = arguments.check_keras_model(model)
        self.config = RunConfig.with_overrides(
            config, iterations_per_loop=iterations_per_loop, model_dir=model_dir
        )
        self.strategy = resolve_strategy(strategy)
        self._progress = Progress()
        self._replicas = Replicas(
            model, self.strategy, self._progress.counters, self.config.partial_batch
        )
        self._model_dir = ModelDir(self.config, self._progress, self._replicas)
        self._model_dir.restore()
        self._engine = Engine(self, self._replicas, self._model_dir, self._progress)

    @property
    def last_run_stats(self) -> RunStats | None:
        """Where the latest run's time went (`tpufit.RunStats`); `None` before any run."""
        return self._engine.last_run_stats

    @property
    def global_step(self) -> int:
        """Steps trained so far (restored from `model_dir`, then counted by every `fit`)."""
        return self._progress.values()["global_step"]

    @property
    def traces(self) -> dict[str, int]:
        """How many times each mode's loop program was traced (for checking retraces)."""
        return self._replicas.traces

    @property
    def layouts(self) -> dict[str, LayoutChoice]:
        """The layout each mode's latest run took, and why: `{"train": LayoutChoice(...)}`.

        E.g. `LayoutChoice(Layout.TRUE_SIZE, "layer 'bn' (BatchNormalization)
        mixes rows in training")`; see `RunConfig.partial_batch`.
        """
        return dict(self._replicas.layouts)

    def compile(self, *args: Any, jit_compile: bool | str | None = None, **kwargs: Any) -> None:
        """Compiles the model, with Keras's arguments and meanings.

        Args:
            *args: Passed to the model's `compile` (Keras's, or the model's
                own when it defines one, e.g. a GAN taking two optimizers).
            jit_compile: `"auto"` (XLA for the step wherever it compiles, with
                one warning where it does not), `True` or `False`; `None` (the
                default) keeps `config.jit_compile` (itself `"auto"` unless
                the `RunConfig` says otherwise).
            **kwargs: Passed to the model's `compile`: `optimizer`, `loss`,
                `metrics`, `loss_weights`, `weighted_metrics`, ...
        """
        if jit_compile is not None:
            self.config = self.config.replace(jit_compile=jit_compile)
        self._replicas.compile(args, kwargs)
        self._model_dir.restore()  # A built model's optimizer state is restored here.

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: int | str = "auto",
        callbacks: list[keras.callbacks.Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        class_weight: dict | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int = 1,
        *,
        drop_remainder: bool = False,
        hooks: list[Hook] | None = None,
        input_fn: Any = None,
        max_steps: int | None = None,
    ) -> keras.callbacks.History:
        """Trains the model, as `keras.Model.fit` does, in loops of `iterations_per_loop` steps.

        Every epoch sees every example: the last partial batch counts as a
        step, padded with masked rows or run at its true size, whichever keeps
        the result exact (docs/exactness.md; `drop_remainder=True` drops it).
        `steps_per_epoch` means what it means in Keras 3: each epoch takes the
        next steps of the current pass over the data, ends early where the
        pass ends (with Keras's "Your input ran out of data" warning), and the
        next epoch starts a new pass; without it, an epoch is one pass (endless
        data: until `model.stop_training`). Keras callbacks run between loops,
        after the `tpufit.Hook`s given as `hooks`. Arguments are Keras's, plus
        keyword-only `drop_remainder` (drop the last partial batch of every
        epoch), `hooks`, and `max_steps` (train up to that global step, however
        many epochs or passes it takes; TPUEstimator's). `keras.config`'s
        `set_max_epochs` / `set_max_steps_per_epoch` cap `epochs` and
        `steps_per_epoch` as in Keras. With a `model_dir`, epochs and steps
        count across runs (docs/model_dir.md).

        Returns:
            A `keras.callbacks.History` with one entry per epoch.
        """
        self._check_compiled("fit")
        x = data.input_fn_as_x(x, input_fn)
        arguments.check_epochs(epochs, initial_epoch)
        errors.check_positive_int("steps_per_epoch", steps_per_epoch, allow_none=True)
        errors.check_positive_int("validation_freq", validation_freq)
        errors.check_positive_int("max_steps", max_steps, allow_none=True)
        if validation_split:
            x, y, sample_weight, validation_data = data.split_for_validation(
                x, y, sample_weight, validation_split, validation_data
            )
        call = FitCall(
            x,
            y,
            sample_weight,
            batch_size,
            epochs,
            verbosity(verbose),
            tuple(callbacks or ()),
            validation_data,
            shuffle,
            class_weight,
            initial_epoch,
            steps_per_epoch,
            validation_steps,
            validation_batch_size,
            validation_freq,
            drop_remainder,
            tuple(hooks or ()),
            max_steps,
        )
        return self._engine.fit(call)

    def evaluate(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        sample_weight: Any = None,
        steps: int | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
        return_dict: bool = False,
        *,
        hooks: list[Hook] | None = None,
        input_fn: Any = None,
    ) -> float | list[float] | dict[str, float]:
        """Evaluates the model, as `keras.Model.evaluate` does, exactly.

        Padding rows count nowhere: every metric and the loss equal what Keras
        computes on the whole data in one batch. Arguments are Keras's, plus
        keyword-only `hooks` (`tpufit.Hook`s, called before the callbacks). As
        in Keras, `steps` reads the data's first steps (warning where it has
        fewer), and a callback setting `model.stop_evaluating = True` ends the
        run, after the current loop.

        Returns:
            The loss and metrics: a scalar, a list in `metrics_names` order,
            or a dict when `return_dict=True`.
        """
        self._check_compiled("evaluate")
        x = data.input_fn_as_x(x, input_fn)
        checks.check_steps(steps, x)
        call = EvaluateCall(
            x,
            y,
            sample_weight,
            batch_size,
            verbosity(verbose),
            steps,
            tuple(callbacks or ()),
            tuple(hooks or ()),
        )
        logs = self._engine.evaluate(call)
        if return_dict:
            return logs
        return logs_module.flatten_in_order(self._replicas.replica_model, logs)

    def predict(
        self,
        x: Any = None,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
        *,
        hooks: list[Hook] | None = None,
        input_fn: Any = None,
    ) -> Any:
        """Predicts, as `keras.Model.predict` does: exactly one output row per input row.

        Arguments are Keras's, plus keyword-only `hooks` (`tpufit.Hook`s,
        whose `after_run` gets each loop's predictions as
        `values.outfeed["outputs"]`). A callback setting
        `model.stop_predicting = True` ends the run after the current loop,
        which returns the rows predicted so far.

        Returns:
            Numpy arrays in the structure of the model's outputs.
        """
        x = data.input_fn_as_x(x, input_fn)
        checks.check_steps(steps, x)
        call = PredictCall(
            x, batch_size, verbosity(verbose), steps, tuple(callbacks or ()), tuple(hooks or ())
        )
        return self._engine.predict(call)

    def predict_batches(
        self,
        x: Any = None,
        batch_size: int | None = None,
        steps: int | None = None,
        *,
        verbose: int | str = 0,
        callbacks: list[keras.callbacks.Callback] | None = None,
        hooks: list[Hook] | None = None,
        input_fn: Any = None,
    ) -> Iterator[Any]:
        """Predicts as `predict` does, yielding the outputs one device loop at a time.

        TPUEstimator's `predict` was a generator; this is it. Each item holds
        the real rows of one loop (up to `iterations_per_loop` batches), in
        order, without padding, in the structure of the model's outputs;
        concatenated, the items equal `predict(x, batch_size, steps=steps)`.
        Nothing is kept between items, so memory stays bounded however many
        rows the data has. The arguments are checked and the input pipeline
        is built now; each loop runs when the next item is asked for.

        Keras callbacks see the run as in `predict`: `on_predict_begin` before
        the first loop, `on_predict_batch_begin` / `on_predict_batch_end`
        (with the loop's `outputs`) around every loop, and `on_predict_end`
        when the iterator is exhausted or closed early (`close()`, or a
        `break` once the iterator is collected), which ends the run after the
        current loop. `model.stop_predicting = True` ends it too.

        Args:
            x: The input, of any kind `predict` takes (arrays, a `tf.data.Dataset`,
                a generator, a `keras.utils.PyDataset`, an `input_fn`).
            batch_size: The global batch size (arrays only; as `predict`).
            steps: Batches to predict, or `None` for all of the data.
            verbose: 0 (the default: silent), 1 or 2, as `predict`'s.
            callbacks: Keras callbacks.
            hooks: `tpufit.Hook`s; `after_run` gets each loop's rows as
                `values.outfeed["outputs"]`.
            input_fn: An `input_fn(ctx)` in place of `x`.

        Returns:
            An iterator of numpy arrays (or nested structures of them).

        Example:
            >>> for probs in tm.predict_batches(dataset):
            ...     write_out(probs)
        """
        x = data.input_fn_as_x(x, input_fn)
        checks.check_steps(steps, x)
        call = PredictCall(
            x, batch_size, verbosity(verbose), steps, tuple(callbacks or ()), tuple(hooks or ())
        )
        return self._engine.predict_batches(call)

    def export(self, path: str | os.PathLike, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        """Writes a SavedModel whose `serving_default` takes any number of rows.

        Its outputs equal `predict(x, batch_size=batch_size)` bit for bit, and
        it loads with TensorFlow alone (`tf.saved_model.load`); see `tpufit.export`.
        """
        errors.check_positive_int("batch_size", batch_size)
        export.write(path, self._replicas, batch_size, self.config.jit_compile)

    def _check_compiled(self, method: str) -> None:
        if not self._replicas.compiled:
            raise errors.NotCompiledError(
                f"`{method}` needs a compiled model: call `tm.compile(optimizer=..., "
                f"loss=..., metrics=...)` first. Received: a TPUModel that was "
                "never compiled"
            )
