"""The three loops of a run — fit, evaluation, prediction — each a plain `for` calling the hooks.

Each takes a `Run`, its `HookList` and a `Plan` (the program, the infeed
iterators, the data's passes; the model's state is already built and
restored) and walks the epochs and, through an `EpochIterator`, their loops,
calling the hooks at the points `tpufit.hooks.base` lists. `begin` and `end`
wrap everything, so `end` runs even when a loop raises. Where the data ends
before an epoch's `steps_per_epoch` (`steps`), the loop warns as Keras does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import keras

from tpufit import errors
from tpufit.data import padding
from tpufit.data.infeed import Lookahead
from tpufit.device import outfeed, programs
from tpufit.hooks.base import HookList, Run, RunContext, RunValues
from tpufit.run import logs as logs_module
from tpufit.run.epochs import EpochIterator
from tpufit.run.loop_length import CappedLoopLength, LoopLength
from tpufit.run.passes import RAN_OUT, Passes, Span, Walk, ran_short, warn_ran_out
from tpufit.run.progress import ResumePoint
from tpufit.run.stats import RunStats

# Keras's "ran out of data" warning names the user's `fit`: through `_run_epoch`, `fit_loop`,
# `Engine.fit` and `TPUModel.fit` (`evaluate`'s is two frames deeper).
_USER_CALL = 5


@dataclasses.dataclass
class Plan:
    """What a run's loops run.

    Attributes:
        program: The mode's device program.
        iterator: Iterator over the distributed infeed.
        passes: The data's passes and the steps asked of an epoch.
        loop_length: How long each loop is.
        tail: Iterator over the partial last batch at its true size, run as
            the last step of every pass, or `None`.
        stats: Collects every loop's timing, or `None`.
        lookahead: Finds the end of a training stream's first pass, or `None`.
    """

    program: programs.LoopProgram
    iterator: Any
    passes: Passes
    loop_length: LoopLength | CappedLoopLength
    tail: Any = None
    stats: RunStats | None = None
    lookahead: Lookahead | None = None


class Validation(Protocol):
    """Evaluates inside `fit` after the epochs it is due (`fit`'s validation data)."""

    def due(self, epoch: int) -> bool:
        """Whether `epoch` ends with a validation."""

    def evaluate(self, parent: Run) -> dict[str, Any]:
        """Evaluates exactly on the validation data; returns its logs."""


def _epoch_loops(
    plan: Plan, span: Span, first_step: int = 0, available: Callable[[int], int] | None = None
) -> EpochIterator:
    return EpochIterator(
        span.main,
        plan.loop_length,
        first_step=first_step,
        tail=span.tail,
        stats=plan.stats,
        available=available,
    )


def _loop_values(
    run: Run,
    hooks: HookList,
    plan: Plan,
    epoch: int,
    values_of: Callable[[outfeed.LoopResult], RunValues],
    loops: EpochIterator,
) -> Iterator[RunValues]:
    """Runs the loops of an epoch with their hooks; yields each loop's values after `after_run`."""
    for loop in loops:
        context = RunContext(run, epoch=epoch, first_step=loop.first_step, steps=loop.steps)
        hooks.before_run(context)
        result = plan.program.run(plan.tail if loop.tail else plan.iterator, context.steps)
        loops.ran(result)
        run.count_steps(result.trained)
        values = None
        if result.steps:
            context.steps = result.steps
            values = values_of(result)
            hooks.after_run(context, values)
        if run.stop_requested:
            loops.stop()
        if values is not None:
            yield values


def _run_epoch(
    run: Run,
    hooks: HookList,
    plan: Plan,
    epoch: int,
    values_of: Callable[[outfeed.LoopResult], RunValues],
    span: Span,
    first_step: int = 0,
    available: Callable[[int], int] | None = None,
) -> EpochIterator:
    loops = _epoch_loops(plan, span, first_step, available)
    for _ in _loop_values(run, hooks, plan, epoch, values_of, loops):
        pass
    if not run.stop_requested and ran_short(span, loops.steps_done, loops.ran_out):
        warn_ran_out(_USER_CALL)  # Keras's stop flag, read first, leaves no epoch to warn in.
    return loops


def loss_values(result: outfeed.LoopResult) -> RunValues:
    """A train/eval loop's `RunValues`: every step's loss and host_call values, the latest logs."""
    hidden = ("padding_rows", "non_finite")
    outfeed = {name: value for name, value in result.outfeed.items() if name not in hidden}
    return RunValues(
        outfeed=outfeed,
        logs=logs_module.pythonify(result.latest),
        non_finite=result.non_finite,
    )


def _epoch_logs(model: keras.Model, loops: EpochIterator) -> dict[str, Any]:
    latest = loops.last.latest if loops.last is not None else {}
    return logs_module.final_logs(model, latest, loops.padding_rows)


def fit_loop(
    run: Run,
    hooks: HookList,
    plan: Plan,
    *,
    model: keras.Model,
    start: ResumePoint,
    validation: Validation | None = None,
) -> None:
    """Trains epoch by epoch from `run.initial_epoch` until `run.epochs`, a stop, or the data's end.

    Each epoch takes its steps from the current pass (see `tpufit.run.passes`);
    a one-shot source whose only pass has ended ends the run, with Keras's
    "ran out of data" warning.

    Args:
        run: The fit run.
        hooks: Its hooks.
        plan: The training program and infeed.
        model: The Keras model on the replicas (its metrics give the logs).
        start: Where the run starts: `start.step` is the first step of the
            resumed epoch `run.initial_epoch`, which started at pass step
            `start.pass_step`.
        validation: Evaluates after the epochs it is due, or `None`.
    """
    resumed_epoch = run.initial_epoch
    walk = Walk(plan.passes, plan.lookahead, start.pass_step)
    with hooks.running(run):
        hooks.after_create_session(run)
        for epoch in range(run.initial_epoch, run.epochs):
            if run.stop_requested:
                break  # A hook asked before the epoch began (the step budget is spent).
            if walk.exhausted:
                warn_ran_out(_USER_CALL - 1)  # from fit_loop itself
                break
            first = start.step if epoch == resumed_epoch else 0
            span = walk.span()
            run.steps_per_epoch = span.steps
            run.progress.start_epoch(epoch, first)
            model.reset_metrics()
            hooks.epoch_begin(run, epoch)
            available = walk.available(span)
            loops = _run_epoch(run, hooks, plan, epoch, loss_values, span, first, available)
            walk.advance(span, loops.steps_done, loops.ran_out)
            if loops.ran_out:
                run.progress.end_epoch(epoch)  # Its length was found only as its data ran out.
            logs = _epoch_logs(model, loops)
            if validation is not None and validation.due(epoch):
                val_logs = validation.evaluate(run)
                logs.update({f"val_{name}": value for name, value in val_logs.items()})
            hooks.epoch_end(run, epoch, logs)
            run.logs = logs
            if run.stop_requested:
                break
        _finalize_optimizer(model)


def evaluation_loop(run: Run, hooks: HookList, plan: Plan, *, model: keras.Model) -> dict:
    """Evaluates once over the plan's data; returns the logs (also left in `run.logs`)."""
    with hooks.running(run):
        model.reset_metrics()
        hooks.after_create_session(run)
        hooks.epoch_begin(run, 0)
        loops = _run_epoch(run, hooks, plan, 0, loss_values, plan.passes.span(0))
        run.logs = _epoch_logs(model, loops)
        hooks.epoch_end(run, 0, run.logs)
    return run.logs


def prediction_loop(run: Run, hooks: HookList, plan: Plan, num_rows: int | None) -> Any:
    """Predicts over the plan's data; returns the outputs of the real rows, in order.

    Each loop's real rows go into the result as the loop returns (preallocated
    when `num_rows` is known, so a loop's padded buffers can go at once);
    hooks get them as `values.outfeed["outputs"]`. A run stopped early
    (`model.stop_predicting`) returns the rows it predicted.
    """
    rows = padding.RowCollector(num_rows)
    for _ in prediction_batches(run, hooks, plan, take_rows=rows.add):
        pass
    return rows.result(complete=not run.stop_requested)


def prediction_batches(
    run: Run, hooks: HookList, plan: Plan, take_rows: Callable[..., Any] = padding.real_rows
) -> Iterator[Any]:
    """Predicts over the plan's data, yielding each loop's real rows, in order, as it returns.

    Nothing is kept between loops: a loop's rows are yielded (and given to
    the hooks as `values.outfeed["outputs"]`) and the next loop runs when the
    consumer asks for more. Closing the iterator early (`close()`, or a
    `break` once it is collected) ends the run as a stop after the current
    loop does: `epoch_end` and `end` run, Keras's `on_predict_end` too.

    Args:
        run: The predict run.
        hooks: Its hooks.
        plan: The predict program and infeed.
        take_rows: `(outputs, mask) -> real rows` of one loop (the outputs'
            rows first, the step axis merged into them).
    """

    def values_of(result: outfeed.LoopResult) -> RunValues:
        return RunValues(outfeed={"outputs": take_rows(*outfeed.stack_rows(result.outfeed))},
                         logs={})  # fmt: skip

    with hooks.running(run):
        hooks.after_create_session(run)
        hooks.epoch_begin(run, 0)
        span = plan.passes.span(0)
        loops = _epoch_loops(plan, span)
        for values in _loop_values(run, hooks, plan, 0, values_of, loops):
            try:
                yield values.outfeed["outputs"]
            except GeneratorExit:
                run.request_stop()  # The consumer is done: end the run as a stop does.
                break
        if not run.stop_requested and ran_short(span, loops.steps_done, loops.ran_out):
            errors.warn(RAN_OUT)
        hooks.epoch_end(run, 0, run.logs)


def _finalize_optimizer(model: keras.Model) -> None:
    # As Keras's fit: an optimizer with `use_ema=True` leaves the averaged weights.
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        with model.distribute_strategy.scope():
            optimizer.finalize_variable_values(model.trainable_weights)
