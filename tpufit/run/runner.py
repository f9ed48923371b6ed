"""The host-side driver: how many steps each loop runs, and what happens between loops."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from tpufit import errors
from tpufit.device.programs import LoopProgram, LoopResult
from tpufit.hooks.base import HookList, Run, RunContext, RunValues
from tpufit.run.logs import to_python
from tpufit.run.loop_length import CappedLoopLength, LoopLength, as_loop_length
from tpufit.run.stats import RunStats


def loop_sizes(total_steps: int, iterations_per_loop: int) -> list[int]:
    """Returns the length of each loop that runs exactly `total_steps` steps.

    Example:
        >>> loop_sizes(10, 4)
        [4, 4, 2]
    """
    full, last = divmod(total_steps, iterations_per_loop)
    return [iterations_per_loop] * full + ([last] if last else [])


def epoch_steps(
    steps_per_pass: int | None, steps_per_epoch: int | None, use_tail: bool, drop_remainder: bool
) -> int:
    """Returns the steps of one epoch: `steps_per_epoch`, else one pass over the data."""
    if steps_per_epoch is not None:
        return steps_per_epoch
    if steps_per_pass is None:
        raise errors.invalid_argument(
            "steps_per_epoch", None, "a positive int when the training dataset is endless"
        )
    steps = steps_per_pass + (1 if use_tail else 0)
    if steps == 0:
        raise errors.invalid_argument(
            "drop_remainder",
            drop_remainder,
            "False, or more rows than batch_size: no full batch is left to train on",
            what="The training data makes no batch",
        )
    return steps


def run_loops(
    program: LoopProgram,
    iterator,
    *,
    total_steps: int | None,
    iterations_per_loop: int | str | LoopLength | CappedLoopLength,
    before_loop: Callable[[int, int], int | None],
    after_loop: Callable[[int, LoopResult], None],
    stop_requested: Callable[[], bool],
    tail=None,
    stats: RunStats | None = None,
) -> int:
    """Runs loops until `total_steps` ran, a stop batch came, or a stop was requested.

    Args:
        program: The device program to run.
        iterator: Iterator over the distributed infeed.
        total_steps: Steps to run, or `None` to run until the stopping signal.
        iterations_per_loop: How each loop's length is chosen: a
            `LoopLength` (which learns from every loop's wall time, the
            hooks between loops included), or a setting to make one from.
        before_loop: Called with `(index of the loop's first step, steps asked)`;
            may return fewer steps for the loop to run (at least 1).
        after_loop: Called with `(index of the loop's first step, result)`
            after every loop that ran at least one step.
        stop_requested: Asked before the first loop and after every loop;
            `True` ends the run there.
        tail: Iterator over the unpadded partial last batch, run as one more
            one-step loop (its own trace) unless the run stopped early.
        stats: Collects every loop's timing, when given.

    Returns:
        The number of steps that ran.
    """
    length = as_loop_length(iterations_per_loop)
    done = 0
    if stop_requested():
        return done
    while total_steps is None or done < total_steps:
        start, traces = time.perf_counter(), getattr(program, "traces", 0)
        asked = length.next_size(None if total_steps is None else total_steps - done)
        limited = before_loop(done, asked)
        asked = asked if limited is None else limited
        result = program.run(iterator, asked)
        if result.steps:
            after_loop(done, result)
        done += result.steps
        stop = result.stopped or stop_requested()
        seconds = time.perf_counter() - start
        traced = getattr(program, "traces", 0) != traces  # then it compiled too: no measure
        if not traced:
            length.record(result.steps, seconds)
        if stats is not None:
            stats.add_loop(result, seconds, traced=traced)
        del result  # its outfeed can go before the next loop fills another
        if stop:
            return done
    if tail is not None:
        start, traces = time.perf_counter(), getattr(program, "traces", 0)
        before_loop(done, 1)
        result = program.run(tail, 1)
        after_loop(done, result)
        done += result.steps
        if stats is not None:
            traced = getattr(program, "traces", 0) != traces
            stats.add_loop(result, time.perf_counter() - start, traced=traced)
    return done


class LoopEvents:
    """Turns `run_loops`' calls into hook events for one epoch of a run, and adds up its loops.

    Args:
        run: The run the loops belong to.
        hooks: The run's hooks.
        epoch: The epoch the loops belong to.
        to_values: Makes a loop's `RunValues` from its `LoopResult`.

    Attributes:
        steps: Steps that ran.
        logs: The latest loop's logs, as Python values.
        padding_rows: Padding rows the loops' steps saw.
    """

    def __init__(
        self,
        run: Run,
        hooks: HookList,
        epoch: int,
        to_values: Callable[[LoopResult], RunValues],
    ) -> None:
        self._run = run
        self._hooks = hooks
        self._epoch = epoch
        self._to_values = to_values
        self._context: RunContext | None = None
        self.steps = 0
        self.logs: dict = {}
        self.padding_rows = 0.0

    def before_loop(self, first: int, asked: int) -> int:
        """Calls `before_run`; returns the steps the loop runs (a hook may have lowered them)."""
        self._context = RunContext(self._run, epoch=self._epoch, first_step=first, steps=asked)
        self._hooks.before_run(self._context)
        return self._context.steps

    def after_loop(self, first: int, result: LoopResult) -> None:
        """Counts the loop (and its steps in the run's global step), then calls `after_run`."""
        context = self._context
        assert context is not None and context.first_step == first
        context.steps = result.steps
        self.steps += result.steps
        if isinstance(result.outfeed, dict) and "padding_rows" in result.outfeed:
            self.padding_rows += float(np.sum(result.outfeed["padding_rows"]))
        self._run.count_steps(result.steps)
        values = self._to_values(result)
        self.logs = values.logs
        self._hooks.after_run(context, values)

    def stop_requested(self) -> bool:
        """Whether the run was asked to stop."""
        return self._run.stop_requested


def loss_values(result: LoopResult) -> RunValues:
    """A train/eval loop's `RunValues`: every step's loss and host_call values, the latest logs."""
    outfeed = {name: value for name, value in result.outfeed.items() if name != "padding_rows"}
    logs = {name: to_python(value) for name, value in result.latest.items()}
    return RunValues(outfeed=outfeed, logs=logs)
