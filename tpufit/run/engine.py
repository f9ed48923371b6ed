"""`Engine`: building and running a `fit`, `evaluate` or `predict` of one `TPUModel`.

A run is built in the order the design gives: the infeed for the mode and
its layout (decided once, by `device/layout.py`), the hooks (the user's,
the Keras callbacks' adapter, the `model_dir`'s, the progress bar), the
model's lazily built state and what the `model_dir` restores into it, the
loop program, and the `Plan` the mode's loop walks. The loops themselves are
in `loops.py`; the front door (`tpufit.model`) only checks arguments and
shapes the results.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from tpufit import cluster, data
from tpufit.config import Layout, Mode
from tpufit.data import checks
from tpufit.data.expected import Expected
from tpufit.data.infeed import Infeed
from tpufit.data.request import InfeedRequest
from tpufit.device.replicas import Replicas
from tpufit.device.steps import uses_keras_steps
from tpufit.hooks import StopAtStepHook
from tpufit.hooks.base import HookList, Run
from tpufit.hooks.keras_callbacks import KerasCallbackHook
from tpufit.hooks.progress_bar import ProgressHook
from tpufit.model_dir.directory import ModelDir
from tpufit.run import failures
from tpufit.run.calls import EvaluateCall, FitCall, PredictCall
from tpufit.run.epochs import epoch_steps
from tpufit.run.loop_length import LoopLengths
from tpufit.run.loops import Plan, evaluation_loop, fit_loop, prediction_loop
from tpufit.run.progress import Progress, ResumePoint, resume_point
from tpufit.run.stats import RunStats

if TYPE_CHECKING:
    from tpufit.model import TPUModel

# A predict's loops stay under this share of its steps: a loop's outputs are
# held twice on the device until the host copies them into the result.
PREDICT_LOOP_SHARE = 8


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
        feed = self._train_feed(call)
        validation_feed = self._validation_feed(call)
        steps, tail_steps, start = self._fit_start(call, feed)
        history = keras.callbacks.History()
        hooks, callback_hook = self._hooks(
            call.hooks,
            [*call.callbacks, history],
            call.verbose,
            epochs=start.epochs,
            steps=steps,
            first=[StopAtStepHook(last_step=call.max_steps)] if call.max_steps is not None else [],
            last=self._model_dir.fit_hooks(call.hooks),
        )
        self._prepare_state(feed)
        self._model_dir.training_starts()
        stats = RunStats(Mode.TRAIN, self._config.iterations_per_loop, checks.is_dataset(call.x))
        skipped = feed.skipping(start.skip_batches, start.skip_tail_batches)
        plan = self._plan(feed, skipped, steps - tail_steps, hooks, stats, tail=bool(tail_steps))
        run = Run(
            Mode.TRAIN,
            self._tpu_model,
            progress=self._progress,
            epochs=start.epochs,
            initial_epoch=start.epoch,
            steps_per_epoch=steps,
            batch_size=feed.batch_size,
            external_stop=self._replicas.stop_requested,
        )
        validation = None
        if validation_feed is not None:
            validation = _Validation(self, validation_feed, call, HookList([callback_hook]))
        self._replicas.user_model.stop_training = False
        self._replicas.replica_model.stop_training = False
        feeds = [feed] if validation_feed is None else [feed, validation_feed]
        with (
            self._replicas.keeping_user_weights(),
            self._progress.counting(),
            failures.translating(self._replicas.strategy, "fit", feeds),
        ):
            fit_loop(run, hooks, plan, model=self._replicas.replica_model, first_step=start.step,
                     validation=validation)  # fmt: skip
        chief = cluster.is_chief(self._replicas.strategy)
        self.last_run_stats = stats.report(call.verbose if chief else 0)
        return history

    def _train_feed(self, call: FitCall) -> Infeed:
        request = InfeedRequest(
            Mode.TRAIN,
            self._replicas.layout_for(Mode.TRAIN),
            call.batch_size,
            class_weight=call.class_weight,
            shuffle=call.shuffle,
            seed=self._shuffle_seed(call.shuffle),
            drop_remainder=call.drop_remainder,
            steps=call.steps_per_epoch,
        )
        return self._infeed(call.x, call.y, call.sample_weight, request)

    def _fit_start(self, call: FitCall, feed: Infeed) -> tuple[int, int, ResumePoint]:
        """Returns the epoch's steps, those of them at true size, and where the fit starts."""
        tail_steps = int(feed.tail is not None and call.steps_per_epoch is None)
        steps = epoch_steps(
            feed.steps_per_pass, call.steps_per_epoch, tail_steps, call.drop_remainder
        )
        start = resume_point(
            self._progress.values(),
            continues=self._model_dir.path is not None,
            initial_epoch=call.initial_epoch,
            epochs=call.epochs,
            epoch_steps=steps,
            tail_steps=tail_steps,
            max_steps=call.max_steps,
            model_dir=self._model_dir.path,
        )
        return steps, tail_steps, start

    def evaluate(self, call: EvaluateCall) -> dict[str, Any]:
        """Evaluates exactly as `call` asks; returns the logs."""
        feed = self._infeed(
            call.x,
            call.y,
            call.sample_weight,
            InfeedRequest(
                Mode.EVAL, self._replicas.layout_for(Mode.EVAL), call.batch_size, steps=call.steps
            ),
        )
        hooks, _ = self._hooks(
            call.hooks,
            call.callbacks,
            call.verbose,
            epochs=1,
            steps=call.steps or feed.steps_per_pass,
        )
        self._prepare_state(feed)
        with failures.translating(self._replicas.strategy, "evaluate", [feed]):
            return self.evaluation(feed, call.steps, hooks)

    def evaluation(
        self, feed: Infeed, steps: int | None, hooks: HookList, parent: Run | None = None
    ) -> dict[str, Any]:
        """Runs one exact evaluation of `feed` (the model's state is built); returns its logs."""
        tail = feed.tail is not None and steps is None
        epoch_steps_ = steps or feed.steps_per_pass
        model = self._replicas.replica_model
        self._replicas.prepare_state(feed, build_metrics=_builds_metrics(feed, model))
        self.last_run_stats = RunStats(Mode.EVAL, self._config.iterations_per_loop)
        plan = self._plan(feed, feed, epoch_steps_, hooks, self.last_run_stats, tail=tail)
        run = Run(
            Mode.EVAL,
            self._tpu_model,
            progress=self._progress,
            steps_per_epoch=None if epoch_steps_ is None else epoch_steps_ + tail,
            batch_size=feed.batch_size,
            parent=parent,
        )
        return evaluation_loop(run, hooks, plan, model=self._replicas.replica_model)

    def predict(self, call: PredictCall) -> Any:
        """Predicts as `call` asks; returns the outputs of the real rows, in order."""
        feed = self._infeed(
            call.x,
            None,
            None,
            InfeedRequest(
                Mode.PREDICT,
                self._replicas.layout_for(Mode.PREDICT),
                call.batch_size,
                steps=call.steps,
            ),
        )
        steps = call.steps or feed.steps_per_pass
        hooks, _ = self._hooks(call.hooks, call.callbacks, call.verbose, epochs=1, steps=steps)
        self._prepare_state(feed)
        self.last_run_stats = RunStats(Mode.PREDICT, self._config.iterations_per_loop)
        plan = self._plan(feed, feed, steps, hooks, self.last_run_stats, tail=False)
        if steps:
            # A loop's outputs stay small next to the result: peak memory near the output's size.
            plan.loop_length = plan.loop_length.at_most(-(-steps // PREDICT_LOOP_SHARE))
        run = Run(
            Mode.PREDICT,
            self._tpu_model,
            progress=self._progress,
            steps_per_epoch=steps,
            batch_size=feed.batch_size,
        )
        with failures.translating(self._replicas.strategy, "predict", [feed]):
            return prediction_loop(run, hooks, plan, None if call.steps else feed.rows)

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
        x, y, sample_weight, batch_size = data.unpack_validation_data(
            call.validation_data, call.validation_batch_size or call.batch_size
        )
        request = InfeedRequest(
            Mode.EVAL,
            self._replicas.layout_for(Mode.EVAL),
            batch_size,
            steps=call.validation_steps,
            reread=True,
        )
        return self._infeed(x, y, sample_weight, request)

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
        self._replicas.prepare_state(feed, build_metrics=_builds_metrics(feed, model))
        self._model_dir.restore()

    def _plan(
        self,
        feed: Infeed,
        source: Infeed,
        steps: int | None,
        hooks: HookList,
        stats: RunStats,
        *,
        tail: bool,
    ) -> Plan:
        program = self._replicas.program(
            feed.mode, feed.layout, self._config.jit_compile, hooks.host_calls(feed.mode)
        )
        return Plan(
            program,
            self._replicas.distribute(source),
            steps,
            self._loop_lengths.get(feed.mode, feed.batch_size),
            self._replicas.distribute(source.tail) if tail else None,
            stats,
        )


def _builds_metrics(feed: Infeed, model: keras.Model) -> bool:
    # Keras's steps (tpufit's masked copies, or Keras's own at true size) update the compiled
    # metrics: their state must exist before tracing.
    return feed.mode is not Mode.PREDICT and (
        feed.layout is Layout.PADDED or uses_keras_steps(model, feed.mode)
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
