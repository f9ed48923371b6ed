"""The three loops of a run — fit, evaluation, prediction — with their hook events.

Each takes a `Run`, its `HookList` and a `Plan` (the program, the infeed
iterators, the step budget; the model's state is already built and restored)
and drives `runner.run_loops` epoch by epoch,
calling the hooks at the points `tpufit.hooks.base` lists. `begin` and `end`
wrap everything, so `end` runs even when a loop raises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from tpufit.data import padding
from tpufit.device import programs
from tpufit.hooks.base import HookList, Run, RunValues
from tpufit.run import logs as logs_module
from tpufit.run import runner


@dataclasses.dataclass
class Plan:
    """What a run's loops run.

    Attributes:
        program: The mode's device program.
        iterator: Iterator over the distributed infeed.
        total_steps: Steps to take from `iterator` per epoch, or `None` to
            run until the stopping signal.
        iterations_per_loop: How long each loop is (`loop_length.LoopLength`).
        tail: Iterator over the unpadded last batch, run as one more step of
            every epoch (a model's own step), or `None`.
        resumed: `(epoch, steps)`: that epoch already trained its first
            `steps` steps (a run resumed from a checkpoint), so it starts at
            step `steps`; the iterators are already past those batches.
        stats: Collects every loop's timing (`run_stats.RunStats`), or `None`.
    """

    program: programs.LoopProgram
    iterator: Any
    total_steps: int | None
    iterations_per_loop: Any
    tail: Any = None
    resumed: tuple[int, int] = (0, 0)
    stats: Any = None


def _run_epoch(run: Run, hooks: HookList, plan: Plan, epoch: int, to_values):
    events = runner.LoopEvents(run, hooks, epoch, to_values)
    first = plan.resumed[1] if epoch == plan.resumed[0] else 0
    runner.run_loops(
        plan.program,
        plan.iterator,
        total_steps=None if plan.total_steps is None else plan.total_steps - first,
        iterations_per_loop=plan.iterations_per_loop,
        before_loop=lambda done, asked: events.before_loop(first + done, asked),
        after_loop=lambda done, result: events.after_loop(first + done, result),
        stop_requested=events.stop_requested,
        tail=plan.tail,
        stats=plan.stats,
    )
    return events


def fit_loop(
    run: Run,
    hooks: HookList,
    plan: Plan,
    *,
    model: keras.Model,
    validate: Callable[[Run, int], dict | None],
) -> None:
    """Trains epoch by epoch from `run.initial_epoch` until `run.epochs` or a stop request.

    Args:
        run: The fit run.
        hooks: Its hooks.
        plan: The training program and infeed.
        model: The Keras model on the replicas (its metrics give the logs).
        validate: `(run, epoch) -> validation logs`, or `None` in an epoch
            without validation.
    """
    with hooks.running(run):
        hooks.after_create_session(run)
        for epoch in range(run.initial_epoch, run.epochs):
            if run.stop_requested:
                break  # A hook asked before the epoch began (the step budget is spent).
            model.reset_metrics()
            hooks.epoch_begin(run, epoch)
            events = _run_epoch(run, hooks, plan, epoch, runner.loss_values)
            logs = logs_module.final_logs(model, events.logs, events.padding_rows)
            val_logs = validate(run, epoch)
            if val_logs is not None:
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
        events = _run_epoch(run, hooks, plan, 0, runner.loss_values)
        run.logs = logs_module.final_logs(model, events.logs, events.padding_rows)
        hooks.epoch_end(run, 0, run.logs)
    return run.logs


def prediction_loop(run: Run, hooks: HookList, plan: Plan, num_rows: int | None) -> Any:
    """Predicts over the plan's data; returns the outputs of the real rows, in order.

    Each loop's real rows go into the result as the loop returns (preallocated
    when `num_rows` is known, so a loop's padded buffers can go at once);
    hooks get them as `values.outfeed["outputs"]`.
    """
    rows = padding.RowCollector(num_rows)
    if plan.total_steps:
        # A loop's outputs stay small next to the result: peak memory near the output's size.
        plan.iterations_per_loop = plan.iterations_per_loop.at_most(-(-plan.total_steps // 8))

    def to_values(result: programs.LoopResult) -> RunValues:
        real_rows = rows.add(*programs.stack_rows(result.outfeed))
        return RunValues(outfeed={"outputs": real_rows}, logs={})

    with hooks.running(run):
        hooks.after_create_session(run)
        hooks.epoch_begin(run, 0)
        _run_epoch(run, hooks, plan, 0, to_values)
        hooks.epoch_end(run, 0, run.logs)
    return rows.result()


def _finalize_optimizer(model: keras.Model) -> None:
    # As Keras's fit: an optimizer with `use_ema=True` leaves the averaged weights.
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        with model.distribute_strategy.scope():
            optimizer.finalize_variable_values(model.trainable_weights)
