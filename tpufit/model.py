"""`TPUModel`: the Keras-style front door.

It checks arguments (before any device work), builds the infeed and the
looped device program for the mode, runs the loops through `runner.py`, and
returns what Keras returns: a `History` from `fit`, scalars from `evaluate`,
numpy arrays from `predict`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import cluster, errors
from tpufit.config import Layout, Mode, RunConfig
from tpufit.data import adapters, infeed
from tpufit.data import checks as validation
from tpufit.data.request import InfeedRequest
from tpufit.device.replicas import Replicas
from tpufit.device.strategy import resolve_strategy
from tpufit.hooks import StopAtStepHook
from tpufit.hooks.base import Hook, HookList, Run
from tpufit.hooks.keras_callbacks import KerasCallbackHook
from tpufit.hooks.progress_bar import ProgressHook, verbosity
from tpufit.model_dir import checkpoint, export
from tpufit.model_dir.directory import ModelDir
from tpufit.run import failures, loops, runner
from tpufit.run import logs as logs_module
from tpufit.run.loop_length import LoopLengths
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
        self.model = validation.check_keras_model(model)
        self.config = RunConfig.with_overrides(
            config, iterations_per_loop=iterations_per_loop, model_dir=model_dir
        )
        self.strategy = resolve_strategy(strategy)
        self._state = checkpoint.TrainingState()
        self._replicas = Replicas(model, self.strategy, self._state.global_step)
        self._model = self._replicas.replica_model
        self._model_dir = ModelDir(self.config, self._state, self._replicas)
        self._replicas.measure_jit = self.config.model_dir is None
        self._model_dir.restore()
        self._loop_lengths = LoopLengths(self.config.iterations_per_loop)
        self.last_run_stats: RunStats | None = None

    @property
    def global_step(self) -> int:
        """Steps trained so far (restored from `model_dir`, then counted by every `fit`)."""
        return int(self._state.global_step.numpy())

    @property
    def traces(self) -> dict[str, int]:
        """How many times each mode's loop program was traced (for checking retraces)."""
        return self._replicas.traces

    def compile(self, *args: Any, jit_compile: bool | str = "auto", **kwargs: Any) -> None:
        """Compiles the model, with Keras's arguments and meanings.

        Args:
            *args: Passed to the model's `compile` (Keras's, or the model's
                own when it defines one, e.g. a GAN taking two optimizers).
            jit_compile: `"auto"` (XLA for the step wherever it compiles, with
                one warning where it does not), `True` or `False`.
            **kwargs: Passed to the model's `compile`: `optimizer`, `loss`,
                `metrics`, `loss_weights`, `weighted_metrics`, ...
        """
        self.config = self.config.replace(jit_compile=jit_compile)
        self._replicas.compile(args, kwargs)
        self._model_dir.restore()  # A built model's optimizer state is restored here.

    @failures.translated
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

        Every epoch sees every example: the last partial batch is padded with
        zero-weight rows and counts as a step (`drop_remainder=True` drops it).
        With `steps_per_epoch`, the data is cycled so every epoch runs exactly
        that many steps. Keras callbacks run between loops (see
        `tpufit.callbacks`), after the `tpufit.Hook`s given as `hooks`.
        Arguments are Keras's, plus keyword-only `drop_remainder` (drop the
        last partial batch of every epoch), `hooks`, and `max_steps` (train up
        to that global step, however many epochs it takes; TPUEstimator's).
        With a `model_dir`, epochs and steps count across runs (docs/model_dir.md).

        Returns:
            A `keras.callbacks.History` with one entry per epoch.
        """
        self._check_compiled("fit")
        x = adapters.input_fn_as_x(x, input_fn)
        validation.check_epochs(epochs, initial_epoch)
        validation.check_positive_int("steps_per_epoch", steps_per_epoch, allow_none=True)
        validation.check_positive_int("validation_freq", validation_freq)
        validation.check_positive_int("max_steps", max_steps, allow_none=True)
        if validation_split:
            x, y, sample_weight, validation_data = adapters.split_for_validation(
                x, y, sample_weight, validation_split, validation_data
            )
        layout = self._replicas.layout_for(Mode.TRAIN)
        padded = layout is Layout.PADDED
        train_feed = self._infeed(
            x,
            y,
            sample_weight,
            batch_size,
            mode="train",
            padded=padded,
            shuffle=shuffle,
            drop_remainder=drop_remainder,
            class_weight=class_weight,
            steps=steps_per_epoch,
        )
        val_feed = None
        if validation_data is not None:
            val_feed = self._infeed(
                *adapters.unpack_validation_data(
                    validation_data, validation_batch_size or batch_size
                ),
                mode="eval",
                padded=self._replicas.layout_for(Mode.EVAL) is Layout.PADDED,
                steps=validation_steps,
                reread=True,
            )
        use_tail = train_feed.tail is not None and steps_per_epoch is None
        epoch_steps = runner.epoch_steps(
            train_feed.steps_per_pass, steps_per_epoch, use_tail, drop_remainder
        )
        start = self._model_dir.start(initial_epoch, epochs, epoch_steps, use_tail, max_steps)
        history = keras.callbacks.History()
        hook_list, callback_hook = self._hooks(
            hooks,
            [*(callbacks or []), history],
            verbose,
            epochs=start.epochs,
            steps=epoch_steps,
            first=[StopAtStepHook(last_step=max_steps)] if max_steps is not None else [],
            last=self._model_dir.fit_hooks(hooks),
        )
        self._start_run(train_feed, build_metrics=padded)
        self._model_dir.training_starts()
        program = self._replicas.program(
            Mode.TRAIN, layout, self.config.jit_compile, hook_list.host_calls("train")
        )
        stats = RunStats("train", self.config.iterations_per_loop, validation.is_dataset(x))
        plan = self._plan(program, train_feed, epoch_steps - use_tail, use_tail, stats, start)
        run = Run(
            "train",
            self,
            epochs=start.epochs,
            initial_epoch=start.position[0],
            steps_per_epoch=epoch_steps,
            batch_size=train_feed.batch_size,
            external_stop=self._replicas.stop_requested,
        )

        def validate(parent: Run, epoch: int) -> dict | None:
            if val_feed is None or (epoch + 1) % validation_freq:
                return None
            return self._evaluate_run(
                val_feed, validation_steps, HookList([callback_hook]), parent=parent
            )

        self._model.stop_training = self.model.stop_training = False
        with self._replicas.keeping_user_weights():
            loops.fit_loop(run, hook_list, plan, model=self._model, validate=validate)
        self.last_run_stats = stats.report(verbosity(verbose) if cluster.is_chief() else 0)
        return history

    @failures.translated
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
        keyword-only `hooks` (`tpufit.Hook`s, called before the callbacks).

        Returns:
            The loss and metrics: a scalar, a list in `metrics_names` order,
            or a dict when `return_dict=True`.
        """
        self._check_compiled("evaluate")
        x = adapters.input_fn_as_x(x, input_fn)
        validation.check_steps(steps, x)
        padded = self._replicas.layout_for(Mode.EVAL) is Layout.PADDED
        feed = self._infeed(
            x, y, sample_weight, batch_size, mode="eval", padded=padded, steps=steps
        )
        hook_list, _ = self._hooks(
            hooks, callbacks, verbose, epochs=1, steps=steps or feed.steps_per_pass
        )
        self._start_run(feed, build_metrics=padded)
        logs = self._evaluate_run(feed, steps, hook_list)
        if return_dict:
            return logs
        return logs_module.flatten_in_order(self._model, logs)

    @failures.translated
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
        `values.outfeed["outputs"]`).

        Returns:
            Numpy arrays in the structure of the model's outputs.
        """
        x = adapters.input_fn_as_x(x, input_fn)
        validation.check_steps(steps, x)
        layout = self._replicas.layout_for(Mode.PREDICT)
        padded = layout is Layout.PADDED
        feed = self._infeed(x, None, None, batch_size, mode="predict", padded=padded, steps=steps)
        total_steps = steps or feed.steps_per_pass
        hook_list, _ = self._hooks(hooks, callbacks, verbose, epochs=1, steps=total_steps)
        self._start_run(feed, build_metrics=False)
        self.last_run_stats = RunStats("predict", self.config.iterations_per_loop)
        program = self._replicas.program(Mode.PREDICT, layout, self.config.jit_compile)
        plan = self._plan(program, feed, total_steps, False, self.last_run_stats)
        run = Run("predict", self, steps_per_epoch=total_steps, batch_size=feed.batch_size)
        return loops.prediction_loop(run, hook_list, plan, None if steps else feed.rows)

    def export(
        self, path: str | os.PathLike, *, batch_size: int = infeed.DEFAULT_BATCH_SIZE
    ) -> None:
        """Writes a SavedModel whose `serving_default` takes any number of rows.

        Its outputs equal `predict(x, batch_size=batch_size)` bit for bit, and
        it loads with TensorFlow alone (`tf.saved_model.load`); see `tpufit.export`.
        """
        validation.check_positive_int("batch_size", batch_size)
        export.write(path, self._replicas, batch_size, self.config.jit_compile)

    def _check_compiled(self, method: str) -> None:
        if not self._replicas.compiled:
            raise errors.NotCompiledError(
                f"`{method}` needs a compiled model: call `tm.compile(optimizer=..., "
                f"loss=..., metrics=...)` first. Received: a TPUModel that was "
                "never compiled"
            )

    def _infeed(self, x, y, sample_weight, batch_size, *, mode, padded, **options) -> infeed.Infeed:
        seed = self.config.seed
        if seed is None and options.get("shuffle"):
            # Follows keras.utils.set_random_seed; a model_dir keeps one seed for all its fits.
            seed = self._model_dir.shuffle_seed(lambda: int(np.random.randint(0, 2**31 - 1)))
        request = InfeedRequest(
            Mode(mode),
            Layout.PADDED if padded else Layout.TRUE_SIZE,
            batch_size,
            seed=seed,
            **options,
        )
        return adapters.build_infeed(x, y, sample_weight, request, self.strategy)

    def _hooks(
        self, hooks, callbacks, verbose, *, epochs: int, steps: int | None, first=(), last=()
    ) -> tuple[HookList, KerasCallbackHook]:
        """Returns a run's hooks: `first`, the user's, the callbacks', `last`, progress."""
        user_hooks = HookList(hooks)
        callback_hook = KerasCallbackHook(
            list(callbacks or []),
            self.model,
            verbose=verbosity(verbose),
            epochs=epochs,
            steps=steps,
            user_weights=self._replicas.user_weights,
        )
        ordered = [*first, *user_hooks.hooks, callback_hook, *last, ProgressHook(verbose)]
        return HookList(ordered), callback_hook

    def _start_run(self, feed: infeed.Infeed, *, build_metrics: bool) -> None:
        """Builds the model's lazy state and restores what `model_dir` still holds for it."""
        self._replicas.copy_weights(into_replicas=True)
        self._replicas.prepare_state(feed, build_metrics=build_metrics)
        self._model_dir.restore()

    def _plan(self, program, feed, total_steps, use_tail: bool, stats, start=None):
        resumed, skip = (start.position, start.skip) if start else ((0, 0), (0, 0))
        source = feed
        if skip[0]:
            # Resuming mid-epoch skips the batches already trained (an input_fn's own
            # per-pipeline datasets are not skipped: they start over).
            source = dataclasses.replace(feed, dataset=feed.dataset.skip(skip[0]))
        tail = self._replicas.distribute(feed.tail.skip(skip[1])) if use_tail else None
        return loops.Plan(
            program,
            self._replicas.distribute(source),
            total_steps,
            self._loop_lengths.get(program.mode, feed.batch_size),
            tail,
            resumed,
            stats,
        )

    def _evaluate_run(
        self, feed: infeed.Infeed, eval_steps: int | None, hook_list: HookList, *, parent=None
    ) -> dict:
        layout = self._replicas.layout_for(Mode.EVAL)
        use_tail = feed.tail is not None and eval_steps is None
        total_steps = eval_steps or feed.steps_per_pass
        program = self._replicas.program(
            Mode.EVAL, layout, self.config.jit_compile, hook_list.host_calls("eval")
        )
        self._replicas.prepare_state(feed, build_metrics=layout is Layout.PADDED)
        self.last_run_stats = RunStats("eval", self.config.iterations_per_loop)
        plan = self._plan(program, feed, total_steps, use_tail, self.last_run_stats)
        steps_per_epoch = None if total_steps is None else total_steps + use_tail
        run = Run(
            "eval", self, steps_per_epoch=steps_per_epoch, batch_size=feed.batch_size, parent=parent
        )
        return loops.evaluation_loop(run, hook_list, plan, model=self._model)
