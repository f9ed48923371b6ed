"""`TPUModel`: the Keras-style front door.

It checks arguments (before any device work), builds the infeed and the
looped device program for the mode, runs the loops through `runner.py`, and
returns what Keras returns: a `History` from `fit`, scalars from `evaluate`,
numpy arrays from `predict`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import errors, infeed, padding, programs, runner, validation
from tpufit import logs as logs_module
from tpufit import steps as step_fns
from tpufit.callbacks import callback_list_for
from tpufit.config import RunConfig
from tpufit.loop_length import LoopLengths
from tpufit.run_stats import RunStats
from tpufit.strategy import build_state, place_model, place_optimizer, resolve_strategy


class TPUModel:
    """Runs a Keras 3 model's `fit` / `evaluate` / `predict` as looped device programs.

    Args:
        model: Any Keras 3 model (Sequential, functional or subclassed). It
            may be built inside or outside the strategy's scope; when outside
            (and the strategy is not TensorFlow's default), tpufit rebuilds it
            under the strategy and copies the weights back after every `fit`.
        strategy: A `tf.distribute.Strategy`, or `None` / `"auto"` to pick a
            TPU, else several GPUs, else the default device.
        iterations_per_loop: Steps each device loop runs: `"auto"`, a positive
            int, or a duration such as `"2s"` (see `RunConfig`).
        model_dir: Directory for the run's files, or `None`.
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
        self._model = place_model(model, self.strategy)
        self._compiled = False
        self._programs: dict[tuple[str, bool], programs.LoopProgram] = {}
        self._metrics_built = False
        self._steps_trained = 0
        self._loop_lengths = LoopLengths(self.config.iterations_per_loop)
        self.last_run_stats: RunStats | None = None

    @property
    def global_step(self) -> int:
        """Steps trained so far by this `TPUModel`."""
        return self._steps_trained

    @property
    def traces(self) -> dict[str, int]:
        """How many times each mode's loop program was traced (for checking retraces)."""
        counts: dict[str, int] = {}
        for (mode, _), program in self._programs.items():
            counts[mode] = counts.get(mode, 0) + program.traces
        return counts

    def compile(self, *args: Any, jit_compile: bool | str = "auto", **kwargs: Any) -> None:
        """Compiles the model, with Keras's arguments and meanings.

        Args:
            *args: Passed to the model's `compile` (Keras's, or the model's
                own when it defines one, e.g. a GAN taking two optimizers).
            jit_compile: `"auto"` (XLA for the step where it compiles and
                measures faster; one warning where it does not compile), `True`
                or `False`.
            **kwargs: Passed to the model's `compile`: `optimizer`, `loss`,
                `metrics`, `loss_weights`, `weighted_metrics`, ...
        """
        self.config = self.config.replace(jit_compile=jit_compile)
        # Every optimizer given (a GAN passes two) must have its variables under the strategy.
        args = tuple(place_optimizer(value, self.strategy) for value in args)
        kwargs = {name: place_optimizer(value, self.strategy) for name, value in kwargs.items()}
        with self.strategy.scope():
            self._model.compile(*args, **kwargs)
        self._compiled = True
        self._programs.clear()
        self._metrics_built = False

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
    ) -> keras.callbacks.History:
        """Trains the model, as `keras.Model.fit` does, in loops sized by `iterations_per_loop`.

        Every epoch sees every example: the last partial batch is padded with
        zero-weight rows and counts as a step (`drop_remainder=True` drops it).
        With `steps_per_epoch`, the data is cycled so every epoch runs exactly
        that many steps.

        `tm.last_run_stats` then says where the time went (printed when `verbose`).

        Returns:
            A `keras.callbacks.History` with one entry per epoch.
        """
        self._check_compiled("fit")
        validation.check_epochs(epochs, initial_epoch)
        validation.check_positive_int("steps_per_epoch", steps_per_epoch, allow_none=True)
        validation.check_positive_int("validation_freq", validation_freq)
        if class_weight is not None:
            raise errors.invalid_argument(
                "class_weight",
                class_weight,
                "None (class weights are not supported yet; pass per-row weights as sample_weight)",
            )
        if validation_split:
            x, y, sample_weight, validation_data = infeed.split_for_validation(
                x, y, sample_weight, validation_split, validation_data
            )
        padded = step_fns.uses_keras_steps(self._model, "train")
        train_feed = self._infeed(
            x,
            y,
            sample_weight,
            batch_size,
            mode="train",
            padded=padded,
            shuffle=shuffle,
            drop_remainder=drop_remainder,
        )
        val_feed = None
        if validation_data is not None:
            val_feed = self._infeed(
                *infeed.unpack_validation_data(
                    validation_data, validation_batch_size or batch_size
                ),
                mode="eval",
                padded=step_fns.uses_keras_steps(self._model, "eval"),
            )
        use_tail = train_feed.tail is not None and steps_per_epoch is None
        epoch_steps = runner.epoch_steps(
            train_feed.steps_per_pass, steps_per_epoch, use_tail, drop_remainder
        )
        self._copy_weights(into_replicas=True)
        self._prepare_state(train_feed, build_metrics=padded)
        program = self._program("train", padded)
        iterator = iter(self._distribute(train_feed.dataset))
        tail = iter(self._distribute(train_feed.tail)) if use_tail else None
        history = keras.callbacks.History()
        callback_list = callback_list_for(
            self.model, list(callbacks or []) + [history], verbose, epochs=epochs, steps=epoch_steps
        )
        self._model.stop_training = self.model.stop_training = False
        stats = RunStats("train", self.config.iterations_per_loop, validation.is_dataset(x))
        callback_list.on_train_begin()
        epoch_logs: dict = {}
        for epoch in range(initial_epoch, epochs):
            self._model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            tracker = runner.LoopTracker(
                callback_list.on_train_batch_begin, callback_list.on_train_batch_end
            )
            runner.run_loops(
                program,
                iterator,
                total_steps=epoch_steps - (1 if use_tail else 0),
                iterations_per_loop=self._loop_lengths.get("train", train_feed.batch_size),
                before_loop=tracker.before_loop,
                after_loop=tracker.after_loop,
                stop_requested=self._stop_requested,
                tail=tail,
                stats=stats,
            )
            self._steps_trained += tracker.steps
            epoch_logs = logs_module.final_logs(self._model, tracker.logs, tracker.padding_rows)
            if val_feed is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._run_evaluation(val_feed, validation_steps, callback_list)
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            self._with_user_model(callback_list.on_epoch_end, epoch, epoch_logs)
            if self._stop_requested():
                break
        self._with_user_model(callback_list.on_train_end, epoch_logs)
        self.last_run_stats = stats.report(verbose)
        return history

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
    ) -> float | list[float] | dict[str, float]:
        """Evaluates the model, as `keras.Model.evaluate` does, exactly.

        Padding rows count nowhere: every metric and the loss equal what Keras
        computes on the whole data in one batch.

        Returns:
            The loss and metrics: a scalar, a list in `metrics_names` order,
            or a dict when `return_dict=True`.
        """
        self._check_compiled("evaluate")
        validation.check_steps(steps, x)
        padded = step_fns.uses_keras_steps(self._model, "eval")
        feed = self._infeed(x, y, sample_weight, batch_size, mode="eval", padded=padded)
        self._copy_weights(into_replicas=True)
        callback_list = callback_list_for(
            self.model, callbacks, verbose, epochs=1, steps=steps or feed.steps_per_pass
        )
        logs = self._run_evaluation(feed, steps, callback_list)
        if return_dict:
            return logs
        return logs_module.flatten_in_order(self._model, logs)

    def predict(
        self,
        x: Any,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
    ) -> Any:
        """Predicts, as `keras.Model.predict` does: exactly one output row per input row.

        Returns:
            Numpy arrays in the structure of the model's outputs.
        """
        validation.check_steps(steps, x)
        feed = self._infeed(x, None, None, batch_size, mode="predict", padded=True)
        self._copy_weights(into_replicas=True)
        self._prepare_state(feed, build_metrics=False)
        program = self._program("predict", True)
        callback_list = callback_list_for(
            self.model, callbacks, verbose, epochs=1, steps=steps or feed.steps_per_pass
        )
        collector = padding.RowCollector(None if steps else feed.rows)

        def after_loop(first: int, result: programs.LoopResult) -> None:
            collector.add(*programs.stack_rows(result.outfeed))
            callback_list.on_predict_batch_end(first + result.steps - 1, {})

        callback_list.on_predict_begin()
        self.last_run_stats = RunStats("predict", self.config.iterations_per_loop)
        total = steps or feed.steps_per_pass
        runner.run_loops(
            program,
            iter(self._distribute(feed.dataset)),
            total_steps=total,
            iterations_per_loop=self._loop_lengths.get("predict", feed.batch_size).at_most(
                total and -(-total // 8)  # a loop's outputs stay small next to the result
            ),
            before_loop=lambda first, _: callback_list.on_predict_batch_begin(first),
            after_loop=after_loop,
            stop_requested=lambda: False,
            stats=self.last_run_stats,
        )
        callback_list.on_predict_end()
        return collector.result()

    def _check_compiled(self, method: str) -> None:
        if not self._compiled:
            raise errors.NotCompiledError(
                f"`{method}` needs a compiled model: call `tm.compile(optimizer=..., "
                f"loss=..., metrics=...)` first. Received: a TPUModel that was "
                "never compiled"
            )

    def _stop_requested(self) -> bool:
        return bool(self._model.stop_training or self.model.stop_training)

    def _distribute(self, dataset: tf.data.Dataset):
        return self.strategy.experimental_distribute_dataset(dataset)

    def _infeed(self, x, y, sample_weight, batch_size, **layout) -> infeed.Infeed:
        seed = self.config.seed
        if seed is None and layout.get("shuffle"):
            seed = int(np.random.randint(0, 2**31 - 1))  # follows keras.utils.set_random_seed
        return infeed.from_user_data(
            x,
            y,
            sample_weight,
            batch_size,
            num_replicas=self.strategy.num_replicas_in_sync,
            seed=seed,
            **layout,
        )

    def _program(self, mode: str, padded: bool) -> programs.LoopProgram:
        key = (mode, padded)
        if key not in self._programs:
            step, reduce = step_fns.replica_step_for(self._model, mode, padded)
            self._programs[key] = programs.LoopProgram(
                self.strategy,
                step,
                reduce,
                stops=mode != "train",
                jit_compile=self.config.jit_compile,
                name=mode,
                first_step_eagerly=mode == "train" and not padded,
            )
        return self._programs[key]

    def _prepare_state(self, feed: infeed.Infeed, *, build_metrics: bool) -> None:
        build_metrics = build_metrics and self._compiled and not self._metrics_built
        build_state(
            self._model,
            self.strategy,
            feed.dataset,
            build_metrics=build_metrics,
            build_optimizer=self._compiled,
        )
        self._metrics_built = self._metrics_built or build_metrics

    def _run_evaluation(self, feed: infeed.Infeed, eval_steps: int | None, callback_list) -> dict:
        padded = step_fns.uses_keras_steps(self._model, "eval")
        self._prepare_state(feed, build_metrics=padded)
        program = self._program("eval", padded)
        self._model.reset_metrics()
        tracker = runner.LoopTracker(
            callback_list.on_test_batch_begin, callback_list.on_test_batch_end
        )
        use_tail = feed.tail is not None and eval_steps is None
        callback_list.on_test_begin()
        self.last_run_stats = RunStats("eval", self.config.iterations_per_loop)
        runner.run_loops(
            program,
            iter(self._distribute(feed.dataset)),
            total_steps=eval_steps or feed.steps_per_pass,
            iterations_per_loop=self._loop_lengths.get("eval", feed.batch_size),
            before_loop=tracker.before_loop,
            after_loop=tracker.after_loop,
            stop_requested=lambda: False,
            tail=iter(self._distribute(feed.tail)) if use_tail else None,
            stats=self.last_run_stats,
        )
        logs = logs_module.final_logs(self._model, tracker.logs, tracker.padding_rows)
        callback_list.on_test_end(logs)
        return logs

    def _with_user_model(self, event, *args) -> None:
        """Runs a callback event with the user's model holding the current weights.

        With a cloned model, the user's model gets the trained weights first,
        and what the event leaves in it (EarlyStopping's best weights) goes back.
        """
        self._copy_weights(into_replicas=False)
        event(*args)
        self._copy_weights(into_replicas=True)

    def _copy_weights(self, *, into_replicas: bool) -> None:
        if self._model is not self.model:
            source, target = (
                (self.model, self._model) if into_replicas else (self._model, self.model)
            )
            target.set_weights(source.get_weights())
