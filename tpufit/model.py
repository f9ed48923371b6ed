"""`TPUModel`: the Keras-style front door.

It checks arguments (before any device work), builds the infeed and the
looped device program for the mode, runs the loops through `runner.py`, and
returns what Keras returns: a `History` from `fit`, scalars from `evaluate`,
numpy arrays from `predict`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import (
    errors,
    infeed,
    padding,
    programs,
    runner,
    validation,
)
from tpufit import logs as logs_module
from tpufit import steps as step_fns
from tpufit.callbacks import KerasCallbackHook
from tpufit.config import RunConfig
from tpufit.hooks.base import Hook, HookList, Run, RunValues
from tpufit.progress import ProgressHook, verbosity
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
        iterations_per_loop: Steps each device loop runs before returning to
            the host.
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
        iterations_per_loop: int = 100,
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
        self._programs: dict[tuple, programs.LoopProgram] = {}
        self._metrics_built = False
        self._steps_trained = 0

    @property
    def global_step(self) -> int:
        """Steps trained so far by this `TPUModel`."""
        return self._steps_trained

    @property
    def traces(self) -> dict[str, int]:
        """How many times each mode's loop program was traced (for checking retraces)."""
        counts: dict[str, int] = {}
        for (mode, *_), program in self._programs.items():
            counts[mode] = counts.get(mode, 0) + program.traces
        return counts

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
        hooks: list[Hook] | None = None,
    ) -> keras.callbacks.History:
        """Trains the model, as `keras.Model.fit` does, in loops of `iterations_per_loop` steps.

        Every epoch sees every example: the last partial batch is padded with
        zero-weight rows and counts as a step (`drop_remainder=True` drops it).
        With `steps_per_epoch`, the data is cycled so every epoch runs exactly
        that many steps. Keras callbacks run between loops (see
        `tpufit.callbacks`), as do `hooks`.

        Args:
            drop_remainder: Drop the last partial batch of every epoch.
            hooks: `tpufit.Hook`s for this run, called before the callbacks.
            **others: As in `keras.Model.fit`.

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
        history = keras.callbacks.History()
        hook_list, callback_hook = self._hooks(
            hooks, [*(callbacks or []), history], verbose, epochs=epochs, steps=epoch_steps
        )
        program = self._program("train", padded, hook_list.host_calls("train"))
        self._copy_weights(into_replicas=True)
        iterator = iter(self._distribute(train_feed.dataset))
        tail = iter(self._distribute(train_feed.tail)) if use_tail else None
        run = Run(
            "train",
            self,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=epoch_steps,
            batch_size=train_feed.batch_size,
            external_stop=self._stop_requested,
        )
        self._model.stop_training = self.model.stop_training = False
        with self._keeping_user_weights(), hook_list.running(run):
            self._prepare_state(train_feed, build_metrics=padded)
            hook_list.after_create_session(run)
            for epoch in range(run.initial_epoch, epochs):
                self._model.reset_metrics()
                hook_list.epoch_begin(run, epoch)
                events = runner.LoopEvents(run, hook_list, epoch, runner.loss_values, self._advance)
                self._run_loops(program, iterator, events, epoch_steps - use_tail, tail)
                logs = logs_module.final_logs(self._model, events.logs, events.padding_rows)
                if val_feed is not None and (epoch + 1) % validation_freq == 0:
                    val_logs = self._evaluate_run(
                        val_feed, validation_steps, HookList([callback_hook]), parent=run
                    )
                    logs.update({f"val_{k}": v for k, v in val_logs.items()})
                hook_list.epoch_end(run, epoch, logs)
                run.logs = logs
                if run.stop_requested:
                    break
            self._finalize_optimizer()
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
        *,
        hooks: list[Hook] | None = None,
    ) -> float | list[float] | dict[str, float]:
        """Evaluates the model, as `keras.Model.evaluate` does, exactly.

        Padding rows count nowhere: every metric and the loss equal what Keras
        computes on the whole data in one batch.

        Args:
            hooks: `tpufit.Hook`s for this run, called before the callbacks.
            **others: As in `keras.Model.evaluate`.

        Returns:
            The loss and metrics: a scalar, a list in `metrics_names` order,
            or a dict when `return_dict=True`.
        """
        self._check_compiled("evaluate")
        validation.check_steps(steps, x)
        padded = step_fns.uses_keras_steps(self._model, "eval")
        feed = self._infeed(x, y, sample_weight, batch_size, mode="eval", padded=padded)
        hook_list, _ = self._hooks(
            hooks, callbacks, verbose, epochs=1, steps=steps or feed.steps_per_pass
        )
        self._copy_weights(into_replicas=True)
        logs = self._evaluate_run(feed, steps, hook_list)
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
        *,
        hooks: list[Hook] | None = None,
    ) -> Any:
        """Predicts, as `keras.Model.predict` does: exactly one output row per input row.

        Args:
            hooks: `tpufit.Hook`s for this run; `after_run` gets the loop's
                predictions as `values.outfeed["outputs"]`.
            **others: As in `keras.Model.predict`.

        Returns:
            Numpy arrays in the structure of the model's outputs.
        """
        validation.check_steps(steps, x)
        feed = self._infeed(x, None, None, batch_size, mode="predict", padded=True)
        total_steps = steps or feed.steps_per_pass
        hook_list, _ = self._hooks(hooks, callbacks, verbose, epochs=1, steps=total_steps)
        program = self._program("predict", True)
        self._copy_weights(into_replicas=True)
        run = Run("predict", self, steps_per_epoch=total_steps, batch_size=feed.batch_size)
        outputs: list = []

        def to_values(result: programs.LoopResult) -> RunValues:
            predictions, mask = programs.stack_rows(result.outfeed)
            outputs.append(padding.drop_padding([predictions], [mask]))
            return RunValues(outfeed={"outputs": outputs[-1]}, logs={})

        with hook_list.running(run):
            self._prepare_state(feed, build_metrics=False)
            hook_list.after_create_session(run)
            hook_list.epoch_begin(run, 0)
            events = runner.LoopEvents(run, hook_list, 0, to_values)
            self._run_loops(program, iter(self._distribute(feed.dataset)), events, total_steps)
            hook_list.epoch_end(run, 0, run.logs)
        return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *outputs)

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

    def _program(self, mode: str, padded: bool, host_calls=None) -> programs.LoopProgram:
        host_calls = host_calls or {}
        key = (mode, padded, tuple(host_calls.items()))
        if key not in self._programs:
            step, reduce = step_fns.replica_step_for(self._model, mode, padded, host_calls)
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

    def _hooks(
        self, hooks, callbacks, verbose, *, epochs: int, steps: int | None
    ) -> tuple[HookList, KerasCallbackHook]:
        """Returns a run's hooks, in calling order: the user's, the callbacks', progress."""
        user_hooks = HookList(hooks)
        callback_hook = KerasCallbackHook(
            list(callbacks or []),
            self.model,
            verbose=verbosity(verbose),
            epochs=epochs,
            steps=steps,
            user_weights=self._user_weights,
        )
        return HookList([*user_hooks.hooks, callback_hook, ProgressHook(verbose)]), callback_hook

    def _run_loops(self, program, iterator, events: runner.LoopEvents, total_steps, tail=None):
        runner.run_loops(
            program,
            iterator,
            total_steps=total_steps,
            iterations_per_loop=self.config.iterations_per_loop,
            before_loop=events.before_loop,
            after_loop=events.after_loop,
            stop_requested=events.stop_requested,
            tail=tail,
        )

    def _evaluate_run(
        self, feed: infeed.Infeed, eval_steps: int | None, hook_list: HookList, *, parent=None
    ) -> dict:
        padded = step_fns.uses_keras_steps(self._model, "eval")
        program = self._program("eval", padded, hook_list.host_calls("eval"))
        use_tail = feed.tail is not None and eval_steps is None
        total_steps = eval_steps or feed.steps_per_pass
        run = Run(
            "eval",
            self,
            steps_per_epoch=None if total_steps is None else total_steps + use_tail,
            batch_size=feed.batch_size,
            parent=parent,
        )
        with hook_list.running(run):
            self._prepare_state(feed, build_metrics=padded)
            self._model.reset_metrics()
            hook_list.after_create_session(run)
            hook_list.epoch_begin(run, 0)
            events = runner.LoopEvents(run, hook_list, 0, runner.loss_values)
            tail = iter(self._distribute(feed.tail)) if use_tail else None
            self._run_loops(program, iter(self._distribute(feed.dataset)), events, total_steps, tail)
            run.logs = logs_module.final_logs(self._model, events.logs, events.padding_rows)
            hook_list.epoch_end(run, 0, run.logs)
        return run.logs

    def _advance(self, steps: int) -> None:
        self._steps_trained += steps

    def _finalize_optimizer(self) -> None:
        # As Keras's fit: an optimizer with `use_ema=True` leaves the averaged weights.
        optimizer = getattr(self._model, "optimizer", None)
        if isinstance(optimizer, keras.optimizers.Optimizer):
            with self.strategy.scope():
                optimizer.finalize_variable_values(self._model.trainable_weights)

    @contextlib.contextmanager
    def _user_weights(self):
        """A block in which the user's model holds the current weights.

        With a cloned model, the user's model gets the replicas' weights
        first, and what the block leaves in it (EarlyStopping's best weights,
        a restored backup) goes back to the replicas.
        """
        if self._model is self.model:
            yield
            return
        self._copy_weights(into_replicas=False)
        yield
        self._copy_weights(into_replicas=True)

    @contextlib.contextmanager
    def _keeping_user_weights(self):
        """Leaves the trained weights in the user's model when the block ends, even on error."""
        try:
            yield
        finally:
            self._copy_weights(into_replicas=False)

    def _copy_weights(self, *, into_replicas: bool) -> None:
        if self._model is not self.model:
            source, target = (
                (self.model, self._model) if into_replicas else (self._model, self.model)
            )
            target.set_weights(source.get_weights())
