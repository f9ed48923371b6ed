"""The hook protocol: what runs on the host at fixed points of a run.

A run is one `fit`, `evaluate` or `predict` call. Its events, in order:

    begin(run)
    after_create_session(run)          variables exist (and are restored)
    for each epoch (one in evaluate / predict):
        epoch_begin(run, epoch)
        for each loop:
            before_run(ctx)            ctx: a RunContext for this loop
            <the device program runs ctx.steps steps>
            after_run(ctx, values)     values: a RunValues with the outfeed
        epoch_end(run, epoch, logs)
    end(run)                           always, when begin ran: also on error

`end` pairs with `begin` the way a `finally` pairs with its `try` (fastai's
"before / run / after, even on error"): every hook whose `begin` returned gets
its `end`, whatever ended the run; `run.error` says what that was.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import errors
from tpufit.config import Mode
from tpufit.device.outfeed import NonFiniteStep
from tpufit.device.step_parts import StepTensors

if TYPE_CHECKING:
    from tpufit.model import TPUModel


# What the loop programs put in the outfeed themselves.
_PROGRAM_OUTFEED = ("loss", "padding_rows", "non_finite")


class Run:
    """One `fit`, `evaluate` or `predict` call, as hooks see it.

    Attributes:
        mode: `Mode.TRAIN`, `Mode.EVAL` or `Mode.PREDICT` (equal to "train",
            "eval", "predict").
        tpu_model: The `tpufit.TPUModel` running.
        epochs: The epoch to stop before (`fit`'s `epochs`; 1 otherwise).
        initial_epoch: The first epoch to run. A hook may raise it in
            `after_create_session` to resume (as `BackupAndRestore` does).
        steps_per_epoch: Steps of one epoch (in `fit`, of the current epoch,
            which ends early where its pass ends), or `None` when the data decides.
        batch_size: The global batch size, when known.
        logs: The run's final logs, set before `end` (empty until then).
        error: The exception that ended the run, or `None`.
        parent: The `fit` run a validation run belongs to, else `None`.
        callback_hook: In `fit`, the hook running its Keras callbacks, which
            an evaluation inside the run (`tpufit.train_and_evaluate`'s)
            reports its `on_test_*` events to, as `fit`'s validation does.
    """

    def __init__(
        self,
        mode: Mode | str,
        tpu_model: TPUModel,
        *,
        progress: Any,
        epochs: int = 1,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        batch_size: int | None = None,
        parent: Run | None = None,
        external_stop: Callable[[], bool] = lambda: False,
        callback_hook: Hook | None = None,
    ) -> None:
        self.mode = Mode(mode)
        self.tpu_model = tpu_model
        self.progress = progress
        self.epochs = epochs
        self.initial_epoch = initial_epoch
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.parent = parent
        self.callback_hook = callback_hook
        self.logs: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._stop = False
        self._external_stop = external_stop

    @property
    def model(self) -> TPUModel:
        """The `tpufit.TPUModel` running: the same as `tpu_model` (the name hooks used first)."""
        return self.tpu_model

    @property
    def strategy(self) -> tf.distribute.Strategy:
        """The `tf.distribute` strategy the run's programs run under."""
        return self.tpu_model.strategy

    @property
    def global_step(self) -> int:
        """Steps trained so far, counted after every training loop."""
        return self.progress.values()["global_step"]

    def count_steps(self, steps: int) -> None:
        """Counts a finished loop's steps: in training, they advance the progress."""
        if self.mode is Mode.TRAIN:
            self.progress.training_loop_ran(steps, self.steps_per_epoch)

    @property
    def stop_requested(self) -> bool:
        """Whether a hook (or the model's Keras stop flag of the mode) asked the run to stop."""
        return self._stop or self._external_stop()

    def request_stop(self) -> None:
        """Asks the run to stop after the current loop (at the next epoch boundary in fit)."""
        self._stop = True


class RunContext:
    """One loop of a run, as `before_run` and `after_run` see it.

    Attributes:
        run: The `Run` this loop belongs to.
        epoch: The epoch the loop belongs to.
        first_step: Index, within the epoch, of the loop's first step.
        global_step: The global step before this loop ran.
        steps: Steps this loop runs. `before_run` may lower it with
            `limit_steps`; after the loop, the steps that ran.
    """

    def __init__(self, run: Run, *, epoch: int, first_step: int, steps: int) -> None:
        self.run = run
        self.epoch = epoch
        self.first_step = first_step
        self.global_step = run.global_step
        self.steps = steps

    @property
    def mode(self) -> Mode:
        """The run's mode: `Mode.TRAIN`, `Mode.EVAL` or `Mode.PREDICT`."""
        return self.run.mode

    @property
    def tpu_model(self) -> TPUModel:
        """The `tpufit.TPUModel` running."""
        return self.run.tpu_model

    @property
    def model(self) -> TPUModel:
        """The `tpufit.TPUModel` running: the same as `tpu_model`."""
        return self.run.tpu_model

    @property
    def last_step(self) -> int:
        """Index, within the epoch, of the loop's last step."""
        return self.first_step + self.steps - 1

    @property
    def stop_requested(self) -> bool:
        """Whether the run was asked to stop."""
        return self.run.stop_requested

    def request_stop(self) -> None:
        """Asks the run to stop after this loop."""
        self.run.request_stop()

    def limit_steps(self, steps: int) -> None:
        """Runs at most `steps` steps in this loop (from `before_run`); at least 1.

        A hook that must act at an exact step (stop at step S, profile from
        step K) shortens the loop so that it ends there.
        """
        if steps < 1:
            raise errors.invalid_argument(
                "steps", steps, "a positive int", what="Cannot limit a loop"
            )
        self.steps = min(self.steps, int(steps))


@dataclasses.dataclass
class RunValues:
    """What one loop hands to `after_run`.

    Attributes:
        outfeed: Numpy arrays with one row per step of the loop. In train and
            eval: `"loss"` (every step's loss) and whatever the hooks asked
            for with `host_call`. In predict: `"outputs"`, the loop's
            predictions with padding rows dropped.
        logs: The metrics after the loop, as Python floats (empty in predict).
        non_finite: In a `fit` with a NaN guard, the step the loop ended at
            because its loss (or gradients) were not finite: its index in
            the loop (the outfeed's last row) and whether its update was
            withheld. `None` otherwise.
    """

    outfeed: dict[str, Any]
    logs: dict[str, Any]
    non_finite: NonFiniteStep | None = None


class Hook:
    """Base class of hooks: override the events you need; each default does nothing.

    Example:
        >>> class PrintLoss(tpufit.Hook):
        ...     def after_run(self, ctx, values):
        ...         print(ctx.global_step, values.outfeed["loss"])
        >>> tm.fit(x, y, hooks=[PrintLoss()])
    """

    def host_call(self, mode: str) -> dict[str, Callable[[StepTensors], Any]]:
        """Declares extra per-step values for the outfeed (TPUEstimator's `host_call`).

        Each function runs inside every step of the device loop, on every
        replica, and returns a tensor; the replicas' values are averaged and
        collected per step, reaching `after_run` as `values.outfeed[name]`
        without leaving the loop. Declared once per run; a hook object keeps
        its program (and trace) across runs when it returns the same
        functions (bound methods compare equal; new lambdas do not).

        Args:
            mode: "train" or "eval".

        Returns:
            A dict of name -> `fn(StepTensors) -> tensor`.
        """
        del mode
        return {}

    def begin(self, run: Run) -> None:
        """Before anything of the run happens on the device."""

    def after_create_session(self, run: Run) -> None:
        """Once the model's variables exist (and are restored), before the first loop."""

    def epoch_begin(self, run: Run, epoch: int) -> None:
        """Before the first loop of an epoch."""

    def before_run(self, ctx: RunContext) -> None:
        """Before each loop."""

    def after_run(self, ctx: RunContext, values: RunValues) -> None:
        """After each loop that ran at least one step."""

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        """After an epoch's last loop (and its validation): `logs` as Keras's `on_epoch_end`."""

    def end(self, run: Run) -> None:
        """After the run, whatever ended it (`run.error` says if an exception did)."""


class HookList:
    """Calls a run's hooks in order; `running` pairs every `begin` with an `end`."""

    def __init__(self, hooks: Sequence[Hook] | None, *, argument: str = "hooks") -> None:
        hooks = list(hooks or [])
        for hook in hooks:
            if not isinstance(hook, Hook):
                hint = " (Keras callbacks go in `callbacks=`)"
                hint = hint if isinstance(hook, keras.callbacks.Callback) else ""
                raise errors.invalid_type(argument, hook, f"a list of tpufit.Hook objects{hint}")
        self.hooks = hooks

    def host_calls(self, mode: str) -> dict[str, Callable[[StepTensors], Any]]:
        """Returns every hook's `host_call` functions for `mode`, checking names are unique."""
        calls: dict[str, Callable] = {}
        if mode == Mode.PREDICT:
            return calls
        for hook in self.hooks:
            for name, fn in hook.host_call(mode).items():
                if name in calls or name in _PROGRAM_OUTFEED:
                    raise errors.invalid_argument(
                        "host_call",
                        name,
                        "names used by one hook only, other than "
                        + ", ".join(repr(n) for n in _PROGRAM_OUTFEED),
                        what=f"{type(hook).__name__}.host_call declares an outfeed name twice",
                    )
                calls[name] = fn
        return calls

    @contextlib.contextmanager
    def running(self, run: Run) -> Iterator[Run]:
        """Runs `begin` now and `end` when the block exits, even on error.

        Only hooks whose `begin` returned get `end`. An exception from the
        block (or from `begin`) is kept in `run.error` and re-raised after
        every `end` ran; an `end` that fails is raised only when nothing
        failed before it.
        """
        begun: list[Hook] = []
        try:
            for hook in self.hooks:
                hook.begin(run)
                begun.append(hook)
            yield run
        except BaseException as error:
            run.error = error
            raise
        finally:
            first_failure: BaseException | None = None
            for hook in begun:
                try:
                    hook.end(run)
                except Exception as failure:  # noqa: BLE001 - every end must run.
                    first_failure = first_failure or failure
            if first_failure is not None and run.error is None:
                raise first_failure

    def after_create_session(self, run: Run) -> None:
        """Calls every hook's `after_create_session`."""
        for hook in self.hooks:
            hook.after_create_session(run)

    def epoch_begin(self, run: Run, epoch: int) -> None:
        """Calls every hook's `epoch_begin`."""
        for hook in self.hooks:
            hook.epoch_begin(run, epoch)

    def before_run(self, ctx: RunContext) -> None:
        """Calls every hook's `before_run`."""
        for hook in self.hooks:
            hook.before_run(ctx)

    def after_run(self, ctx: RunContext, values: RunValues) -> None:
        """Calls every hook's `after_run`."""
        for hook in self.hooks:
            hook.after_run(ctx, values)

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        """Calls every hook's `epoch_end` (hooks may add entries to `logs`)."""
        for hook in self.hooks:
            hook.epoch_end(run, epoch, logs)


def first_non_finite(values: np.ndarray) -> int | None:
    """Returns the index of the first non-finite entry of `values`, or `None`."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
    return int(bad[0]) if bad.size else None
