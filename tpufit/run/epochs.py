"""The epoch iterator: each loop of an epoch, its first step and its size.

In the spirit of Keras's `EpochIterator`, a run's loop walks an epoch with a
plain `for`:

    loops = EpochIterator(steps, loop_length)
    for loop in loops:               # Loop(first_step, steps, tail)
        ...before_run...
        result = program.run(iterator, loop.steps)
        loops.ran(result)            # the steps that ran, a stop batch
        ...after_run...
        if stop_requested: loops.stop()

The iterator sizes each loop from the `LoopLength` (the last loop shrinks so
that exactly the epoch's steps run, and, for a stream whose end is found as it
is read, so that no loop reads past it), ends the epoch when its steps ran,
its data ran out (a loop read a stop batch, or no step is left to read), or
`stop()` was called, and then yields one more one-step loop for the partial
last batch when it runs at its true size (`tail`). It times every loop from
choosing its size until the body comes back for the next one (so hooks and
callbacks between loops count, as the loop-length estimate needs) and hands
each loop to the run's `RunStats`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

from tpufit.device.outfeed import LoopResult
from tpufit.run.loop_length import CappedLoopLength, LoopLength
from tpufit.run.stats import RunStats

# The clock loops are timed by (read when an `EpochIterator` is made): a test that needs
# time replaces it with one of its own, so no outcome depends on the machine's speed.
clock: Callable[[], float] = time.perf_counter


@dataclasses.dataclass(frozen=True)
class Loop:
    """One loop of an epoch.

    Attributes:
        first_step: Index, within the epoch, of the loop's first step.
        steps: Steps to run (a hook may lower them before the loop runs).
        tail: Whether this is the one-step loop of the partial last batch at
            its true size (it reads the tail stream, and may trace anew).
    """

    first_step: int
    steps: int
    tail: bool = False


class EpochIterator:
    """Yields the loops of one epoch (see the module docstring).

    Args:
        steps: The epoch's steps, the tail not counted, or `None` to run
            until its data runs out.
        loop_length: Sizes each loop and learns from its wall time.
        first_step: The epoch's first step (later than 0 in a resumed epoch).
        tail: Run one more one-step loop for the partial last batch.
        stats: Receives every loop's timing, or `None`.
        clock: Seconds as a float; by default the module's `clock`.
        available: For data whose end is found as it is read: how many of
            the epoch's first `n` steps exist (at most `n`), asked before
            each loop; `None` when every loop can read all its steps.

    Attributes:
        steps_done: Index, within the epoch, of the next step (the steps that
            ran, plus `first_step`).
        stopped: Whether the data ran out or `stop()` was called.
        ran_out: Whether the data ran out: a loop read a stop batch, or
            `available` left no step to run.
        padding_rows: Padding rows the epoch's steps saw.
        last: The latest loop's `LoopResult` that ran a step, or `None`.
    """

    def __init__(
        self,
        steps: int | None,
        loop_length: LoopLength | CappedLoopLength,
        *,
        first_step: int = 0,
        tail: bool = False,
        stats: RunStats | None = None,
        clock: Callable[[], float] | None = None,
        available: Callable[[int], int] | None = None,
    ) -> None:
        self._steps = steps
        self._available = available
        self._length = loop_length
        self._tail = tail
        self._stats = stats
        self._clock = clock or globals()["clock"]
        self._result: LoopResult | None = None
        self.steps_done = first_step
        self.stopped = False
        self.ran_out = False
        self.padding_rows = 0.0
        self.last: LoopResult | None = None

    def __iter__(self) -> Iterator[Loop]:
        while not self.stopped and (self._steps is None or self.steps_done < self._steps):
            started = self._clock()
            remaining = None if self._steps is None else self._steps - self.steps_done
            size = self._length.next_size(remaining)
            if self._available is not None:
                size = self._available(self.steps_done + size) - self.steps_done
                if size < 1:
                    self.ran_out = self.stopped = True
                    break
            yield Loop(self.steps_done, size)
            self._finish(self._clock() - started, measure=True)
        if self._tail and not self.stopped:
            started = self._clock()
            yield Loop(self.steps_done, 1, tail=True)
            self._finish(self._clock() - started, measure=False)

    def ran(self, result: LoopResult) -> None:
        """Takes the result of the loop just yielded, right after the program returns."""
        self._result = result
        self.steps_done += result.steps
        if result.steps:
            self.last = result
        if isinstance(result.outfeed, dict) and "padding_rows" in result.outfeed:
            self.padding_rows += float(result.outfeed["padding_rows"].sum())
        if result.stopped:
            self.ran_out = self.stopped = True

    def stop(self) -> None:
        """Ends the epoch after the current loop (a hook or callback asked)."""
        self.stopped = True

    def _finish(self, seconds: float, *, measure: bool) -> None:
        result, self._result = self._result, None
        if result is None:
            raise RuntimeError("EpochIterator: call ran(result) for every loop it yields")
        if measure and not result.traced:  # A loop that traced also compiled: no measure.
            self._length.record(result.steps, seconds)
        if self._stats is not None:
            self._stats.add_loop(result, seconds)
