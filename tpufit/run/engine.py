"""`Engine`: building and running a `fit`, `evaluate` or `predict` of one `TPUModel`.

A run is built in the order the design gives: the infeed for the mode and
its layout (decided once, by `device/layout.py`), the hooks (the user's,
the Keras callbacks' adapter, the `model_dir`'s, the progress bar), the
model's lazily built state and what the `model_dir` restores into it, the
loop program, and the `Plan` the mode's loop walks (over arrays held on the
device where `RunConfig.infeed` and `data/resident.py` say so, else the
distributed stream). The loops themselves are
in `loops.py`; the front door (`tpufit.model`) only checks arguments and
shapes the results.

As Keras's trainer does, a run lowers `epochs` and `steps` to the
`keras.config` caps (`limits.py`), takes an array input's batch size from
`steps` when only `steps` is given, and clears the model's stop flag of its
mode (`stop_training`, `stop_evaluating`, `stop_predicting`) before reading it
after every loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from tpufit import cluster, data
from tpufit.config import Mode
from tpufit.data import arrays, checks, resident
from tpufit.data.expected import Expected
from tpufit.data.infeed import Infeed
from tpufit.data.request import InfeedRequest
from tpufit.device.replicas import Replicas
from tpufit.device.steps import needs_metric_state, warn_if_nothing_trains
from tpufit.hooks import NanGuardHook, StepLogHook, StopAtStepHook
from tpufit.hooks.base import HookList, Run
from tpufit.hooks.keras_callbacks import KerasCallbackHook
from tpufit.hooks.progress_bar import ProgressHook
from tpufit.model_dir.directory import ModelDir
from tpufit.run import failures, limits, passes
from tpufit.run.calls import EvaluateCall, FitCall, PredictCall
from tpufit.run.loop_length import LoopLengths
from tpufit.run.loops import Plan, evaluation_loop, fit_loop, prediction_batches, prediction_loop
from tpufit.run.progress import Progress, ResumePoint, resume_point
from tpufit.run.stats import RunStats

if TYPE_CHECKING:
    from tpufit.model import TPUModel

# A predict's loops stay under this share of its steps: a loop's outputs are
# held twice on the device until the host copies them into the result.
PREDICT_LOOP_SHARE = 8

# Keras's flag that stops each mode's loop, set by a callback.
_STOP_FLAGS = {
    Mode.TRAIN: "stop_training",
    Mode.EVAL: "stop_evaluating",
    Mode.PREDICT: "stop_predicting",
}

# Warnings of a run's arguments name the user's call: the front door, then the Engine's method.
_USER_CALL = 3


class Engine:
    """What every run of one `TPUModel` shares, and building each mode's run from it.

    Args:
        tpu_model: The `TPUModel` whose runs these are (hooks see it as `run.tpu_model`).
        replicas: The model placed under the strategy, with its programs.
        model_dir: The model's checkpoints (a `ModelDir` without a path when none).
        progress: Where training is.

    Attributes:
        last_run_stats: The `RunStats` of the latest run (of its training
            loops, for `fit`).
    """

    def __init__(
        self, tpu_model: TPUModel, replicas: Replicas, model_dir: ModelDir, progress: Progress
    ) -> None:
        self._tpu_model = tpu_model
        self._replicas = replicas
        self._model_dir = model_dir
        self._progress = progress
        self._loop_lengths = LoopLengths(tpu_model.config.iterations_per_loop)
        self.last_run_stats: RunStats | None = None

    @property
    def _config(self):
        return self._tpu_model.config  # `compile` may replace it (jit_compile).

    def fit(self, call: FitCall) -> keras.callbacks.History:
        """Trains as `call` asks; returns Keras's `History`."""
        call = limits.fit_call(call, stacklevel=_USER_CALL + 1)
        feed = self._train_feed(call)
        validation_feed = self._validation_feed(call)
        data_passes, start = self._fit_start(call, feed)
        steps = data_passes.steps_per_epoch or data_passes.steps
        history = keras.callbacks.History()
        hooks, callback_hook = self._hooks(
            call.hooks,
            [*call.callbacks, history],
            call.verbose,
            epochs=start.epochs,
            steps=steps,
            first=[StopAtStepHook(last_step=call.max_steps)] if call.max_steps is not None else [],
            last=[*self._default_guard(call), *self._model_dir.fit_hooks(), *self._step_log()],
        )
        self._prepare_state(feed)
        warn_if_nothing_trains(self._replicas.replica_model)
        self._model_dir.training_starts()
        stats = RunStats(Mode.TRAIN, self._config.iterations_per_loop, checks.is_dataset(call.x))
        skipped = feed.skipping(start.skip_batches, start.skip_tail_batches)
        plan = self._plan(feed, skipped, data_passes, hooks, stats)
        run = Run(
            Mode.TRAIN,
            self._tpu_model,
            progress=self._progress,
            epochs=start.epochs,
            initial_epoch=start.epoch,
            steps_per_epoch=steps,
            batch_size=feed.batch_size,
            external_stop=self._stop_flag(Mode.TRAIN),
            callback_hook=callback_hook,
        )
        validation = None
        if validation_feed is not None:
            validation_hooks = HookList([callback_hook, *self._model_dir.eval_hooks()])
            validation = _Validation(self, validation_feed, call, validation_hooks)
        feeds = [feed] if validation_feed is None else [feed, validation_feed]
        with (
            self._replicas.keeping_user_weights(),
            self._progress.counting(),
            failures.translating(self._replicas.strategy, "fit", feeds, self._model_dir.path),
        ):
            fit_loop(run, hooks, plan, model=self._replicas.replica_model, start=start,
                     validation=validation)  # fmt: skip
        chief = cluster.is_chief(self._replicas.strategy)
        self.last_run_stats = stats.report(call.verbose if chief else 0)
        return history

    def _step_log(self) -> list[StepLogHook]:
        every = self._config.log_step_count_steps  # `loss = …, step = …` lines
        return [] if every is None else [StepLogHook(every)]

    def _default_guard(self, call: FitCall) -> list[NanGuardHook]:
        """The `NanGuardHook` a `fit` gets: none with `nan_guard=False` or the user's own.

        A `keras.callbacks.TerminateOnNaN` among the callbacks asks for
        Keras's meaning instead (the run stops at the end of the loop).
        """
        keras_meaning = any(
            isinstance(c, keras.callbacks.TerminateOnNaN) for c in call.callbacks or []
        )
        given = any(isinstance(hook, NanGuardHook) for hook in call.hooks or [])
        return [] if keras_meaning or given or not self._config.nan_guard else [NanGuardHook()]

    def _train_feed(self, call: FitCall) -> Infeed:
        request = InfeedRequest(
            Mode.TRAIN,
            self._replicas.layout_for(Mode.TRAIN),
            arrays.batch_size_for_steps(call.x, call.batch_size, call.steps_per_epoch),
            class_weight=call.class_weight,
            shuffle=call.shuffle,
            seed=self._shuffle_seed(call.shuffle),
            drop_remainder=call.drop_remainder,
            steps=call.steps_per_epoch,
            # Several epochs, each to the data's end: a one-shot source keeps its batches.
            reread=call.steps_per_epoch is None and call.epochs - call.initial_epoch > 1,
        )
        return self._infeed(call.x, call.y, call.sample_weight, request)

    def _fit_start(self, call: FitCall, feed: Infeed) -> tuple[passes.Passes, ResumePoint]:
        """Returns the training data's passes and where the fit starts."""
        data_passes = passes.of_feed(feed, call.steps_per_epoch, call.drop_remainder)
        start = resume_point(
            self._progress.values(),
            continues=self._model_dir.path is not None,
            initial_epoch=call.initial_epoch,
            epochs=call.epochs,
            passes=data_passes,
            max_steps=call.max_steps,
            model_dir=self._model_dir.path,
        )
        return data_passes, start

    def evaluate(self, call: EvaluateCall) -> dict[str, Any]:
        """Evaluates exactly as `call` asks; returns the logs."""
        steps = limits.steps(call.steps, stacklevel=_USER_CALL)
        batch_size = arrays.batch_size_for_steps(call.x, call.batch_size, steps)
        layout = self._replicas.layout_for(Mode.EVAL)
        request = InfeedRequest(Mode.EVAL, layout, batch_size, steps=steps)
        feed = self._infeed(call.x, call.y, call.sample_weight, request)
        span = passes.of_feed(feed, steps).span(0)
        hooks, _ = self._hooks(
            call.hooks,
            call.callbacks,
            call.verbose,
            epochs=1,
            steps=span.steps,
            last=self._model_dir.eval_hooks(),
        )
        self._prepare_state(feed)
        with failures.translating(
            self._replicas.strategy, "evaluate", [feed], self._model_dir.path
        ):
            return self.evaluation(feed, steps, hooks)

    def evaluation(
        self, feed: Infeed, steps: int | None, hooks: HookList, parent: Run | None = None
    ) -> dict[str, Any]:
        """Runs one exact evaluation of `feed` (the model's state is built); returns its logs."""
        eval_passes = passes.of_feed(feed, steps)
        model = self._replicas.replica_model
        self._replicas.prepare_state(
            feed, build_metrics=needs_metric_state(model, feed.mode, feed.layout)
        )
        self.last_run_stats = RunStats(Mode.EVAL, self._config.iterations_per_loop)
        plan = self._plan(feed, feed, eval_passes, hooks, self.last_run_stats)
        run = Run(
            Mode.EVAL,
            self._tpu_model,
            progress=self._progress,
            steps_per_epoch=eval_passes.span(0).steps,
            batch_size=feed.batch_size,
            parent=parent,
            external_stop=self._stop_flag(Mode.EVAL),
        )
        return evaluation_loop(run, hooks, plan, model=self._replicas.replica_model)

    def predict(self, call: PredictCall) -> Any:
        """Predicts as `call` asks; returns the outputs of the real rows, in order."""
        run, hooks, plan, feed, rows = self._prediction(call)
        with failures.translating(self._replicas.strategy, "predict", [feed], self._model_dir.path):
            return prediction_loop(run, hooks, plan, rows)

    def predict_batches(self, call: PredictCall) -> Iterator[Any]:
        """Builds the predict run `call` asks for now; returns an iterator over its loops' rows."""
        run, hooks, plan, feed, _ = self._prediction(call)

        def batches() -> Iterator[Any]:
            with failures.translating(
                self._replicas.strategy, "predict", [feed], self._model_dir.path
            ):
                yield from prediction_batches(run, hooks, plan)

        return batches()

    def _prediction(self, call: PredictCall) -> tuple[Run, HookList, Plan, Infeed, int | None]:
        """Builds a predict run: the run, its hooks, plan, infeed and rows (`None` given steps)."""
        steps = limits.steps(call.steps, stacklevel=_USER_CALL + 1)
        layout = self._replicas.layout_for(Mode.PREDICT)
        request = InfeedRequest(
            Mode.PREDICT,
            layout,
            arrays.batch_size_for_steps(call.x, call.batch_size, steps),
            steps=steps,
        )
        feed = self._infeed(call.x, None, None, request)
        predict_passes = passes.of_feed(feed, steps)
        epoch_steps = predict_passes.span(0).steps
        hooks, _ = self._hooks(
            call.hooks, call.callbacks, call.verbose, epochs=1, steps=epoch_steps
        )
        self._prepare_state(feed)
        self.last_run_stats = RunStats(Mode.PREDICT, self._config.iterations_per_loop)
        plan = self._plan(feed, feed, predict_passes, hooks, self.last_run_stats)
        if epoch_steps:
            # A loop's outputs stay small next to the result: peak memory near the output's size.
            plan.loop_length = plan.loop_length.at_most(-(-epoch_steps // PREDICT_LOOP_SHARE))
        run = Run(
            Mode.PREDICT,
            self._tpu_model,
            progress=self._progress,
            steps_per_epoch=epoch_steps,
            batch_size=feed.batch_size,
            external_stop=self._stop_flag(Mode.PREDICT),
        )
        return run, hooks, plan, feed, None if steps else feed.rows

    def _shuffle_seed(self, shuffle: bool) -> int | None:
        seed = self._config.seed
        if seed is None and shuffle:
            # Follows keras.utils.set_random_seed; a model_dir keeps one seed for all its fits.
            seed = self._progress.shuffle_seed(
                lambda: int(np.random.randint(0, 2**31 - 1)),
                keep=self._model_dir.path is not None,
            )
        return seed

    def _infeed(self, x: Any, y: Any, sample_weight: Any, request: InfeedRequest) -> Infeed:
        expected = Expected.of(self._replicas.replica_model, request.mode)
        request = dataclasses.replace(request, expected=expected)
        return data.build_infeed(x, y, sample_weight, request, self._replicas.strategy)

    def _validation_feed(self, call: FitCall) -> Infeed | None:
        if call.validation_data is None:
            return None
        batch_size = call.validation_batch_size or call.batch_size
        return self.evaluation_feed(call.validation_data, batch_size, call.validation_steps)

    def evaluation_feed(
        self, eval_data: Any, batch_size: int | None, steps: int | None, *, prepare: bool = False
    ) -> Infeed:
        """Returns the infeed of `eval_data` (as `fit`'s `validation_data`) for evaluations.

        With `prepare`, also builds the model's state for it and restores what
        the `model_dir` holds, as the start of a run does.
        """
        x, y, sample_weight, batch_size = data.unpack_validation_data(eval_data, batch_size)
        request = InfeedRequest(
            Mode.EVAL,
            self._replicas.layout_for(Mode.EVAL),
            arrays.batch_size_for_steps(x, batch_size, steps),
            steps=steps,
            reread=True,
        )
        feed = self._infeed(x, y, sample_weight, request)
        if prepare:
            self._prepare_state(feed)
        return feed

    def _stop_flag(self, mode: Mode) -> Callable[[], bool]:
        """Clears Keras's stop flag of `mode` on the models; returns how to read it.

        Keras reads it after every batch (`steps_per_execution` batches);
        tpufit after every loop.
        """
        models = {id(m): m for m in (self._replicas.user_model, self._replicas.replica_model)}
        flag = _STOP_FLAGS[mode]
        for model in models.values():
            setattr(model, flag, False)
        return lambda: any(getattr(model, flag, False) for model in models.values())

    def _hooks(
        self, hooks, callbacks, verbose: int, *, epochs: int, steps: int | None, first=(), last=()
    ) -> tuple[HookList, KerasCallbackHook]:
        """Returns a run's hooks: `first`, the user's, the callbacks', `last`, progress."""
        user_hooks = HookList(hooks)
        callback_hook = KerasCallbackHook(
            list(callbacks or []),
            self._replicas.user_model,
            verbose=verbose,
            epochs=epochs,
            steps=steps,
            user_weights=self._replicas.user_weights,
        )
        ordered = [*first, *user_hooks.hooks, callback_hook, *last, ProgressHook(verbose)]
        return HookList(ordered), callback_hook

    def _prepare_state(self, feed: Infeed) -> None:
        """Builds the model's lazy state and restores what `model_dir` still holds for it."""
        self._replicas.copy_weights(into_replicas=True)
        model = self._replicas.replica_model
        self._replicas.prepare_state(
            feed, build_metrics=needs_metric_state(model, feed.mode, feed.layout)
        )
        self._model_dir.restore()

    def _plan(
        self, feed: Infeed, source: Infeed, data_passes: passes.Passes, hooks: HookList, stats
    ) -> Plan:
        program = self._replicas.program(
            feed.mode,
            feed.layout,
            self._config.jit_compile,
            hooks.host_calls(feed.mode),
            nan_guard=any(isinstance(hook, NanGuardHook) for hook in hooks.hooks),
        )
        strategy = self._replicas.strategy
        iterator = resident.iterator_for(source, self._config.infeed, strategy)
        return Plan(
            program,
            iterator or self._replicas.distribute(source),
            data_passes,
            self._loop_lengths.get(feed.mode, feed.batch_size),
            self._replicas.distribute(source.tail) if data_passes.tail else None,
            stats,
            source.lookahead,
        )


@dataclasses.dataclass
class _Validation:
    """Evaluates `fit`'s validation data after every `validation_freq`-th epoch."""

    engine: Engine
    feed: Infeed
    call: FitCall
    hooks: HookList

    def due(self, epoch: int) -> bool:  # noqa: D102 - see loops.Validation.
        return (epoch + 1) % self.call.validation_freq == 0

    def evaluate(self, parent: Run) -> dict[str, Any]:  # noqa: D102
        return self.engine.evaluation(self.feed, self.call.validation_steps, self.hooks, parent)
