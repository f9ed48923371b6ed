"""How many steps the next loop runs: a fixed count, or sized from measured loop times.

A loop costs a fixed host overhead (calling the program, handing its outfeed
to the host, running hooks and callbacks between loops) plus the time of its
steps: `seconds = overhead + steps * step_seconds`. With `"auto"` or a
duration (`"2s"`), `LoopLength` learns both terms from the loops that ran and
sizes the next loop to take the target time:

- it starts small: the first loop runs 1 step, and no loop runs more than
  `GROWTH` times the steps of the longest loop measured so far, so a step time
  misjudged from short loops cannot make one loop run for minutes;
- the overhead is the intercept of a least-squares line through the recent
  loops (weighted by 1/seconds², as timing noise grows with a loop's length),
  so it is measured while loop sizes still differ and kept once they settle;
- the step time is the median of the last three loops' (seconds - overhead)
  / steps, so one loop slowed by a checkpoint or another process does not
  halve the next one;
- `"auto"` aims at `overhead / AUTO_OVERHEAD_SHARE` (overhead under 1% of the
  loop), kept between `AUTO_MIN_SECONDS` and `AUTO_MAX_SECONDS` so that hooks,
  the progress bar and stop requests still run every couple of seconds;
- a loop never runs more steps than remain.

TPUEstimator's `IterationCountEstimator` projected `target / mean step time`
from a ring of 20 loops; this adds the overhead term, which "auto" needs.
"""

from __future__ import annotations

import collections
import statistics

from tpufit import config

AUTO_OVERHEAD_SHARE = 0.01
AUTO_MIN_SECONDS = 0.2
AUTO_MAX_SECONDS = 2.0
GROWTH = 4
WINDOW = 20
MAX_STEPS = 2**31 - 1  # the loop length is an int32 tensor in the program


class LoopLength:
    """Chooses each loop's number of steps from an `iterations_per_loop` setting.

    Args:
        iterations_per_loop: A positive int (every loop runs that many steps,
            fewer only when fewer remain), `"auto"`, or a duration such as
            `"2s"` or `"0.5s"` (see `RunConfig`).

    Example:
        >>> length = LoopLength("1s")
        >>> length.next_size(remaining=1000)   # nothing measured yet
        1
        >>> length.record(steps=1, seconds=0.011)
        >>> length.record(steps=4, seconds=0.041)
        >>> length.next_size(remaining=1000)   # 1 ms overhead, 10 ms a step
        16
        >>> length.record(steps=16, seconds=0.161)
        >>> length.next_size(remaining=1000)
        64
        >>> length.record(steps=64, seconds=0.641)
        >>> length.next_size(remaining=1000)   # (1 s - 1 ms) / 10 ms
        99
        >>> length.next_size(remaining=30)
        30
    """

    def __init__(self, iterations_per_loop: int | str = config.AUTO) -> None:
        self.setting = iterations_per_loop
        self.kind, amount = config.parse_iterations_per_loop(iterations_per_loop)
        self._fixed = int(amount) if self.kind == "steps" else None
        self._seconds = amount if self.kind == "seconds" else None
        self._loops: collections.deque[tuple[int, float]] = collections.deque(maxlen=WINDOW)
        self._longest = 0
        self.overhead_seconds = 0.0
        self.step_seconds: float | None = None

    @property
    def target_seconds(self) -> float | None:
        """How long a loop should take; `None` for a fixed number of steps."""
        if self._fixed is not None:
            return None
        if self._seconds is not None:
            return self._seconds
        wanted = self.overhead_seconds / AUTO_OVERHEAD_SHARE
        return min(max(wanted, AUTO_MIN_SECONDS), AUTO_MAX_SECONDS)

    def next_size(self, remaining: int | None = None) -> int:
        """Returns the steps the next loop should run.

        Args:
            remaining: Steps left in the epoch, budget or data, or `None`
                when unknown (the loop then ends at the stopping signal).

        Returns:
            At least 1 and at most `remaining`.
        """
        if remaining is not None and remaining < 1:
            raise ValueError(f"next_size needs remaining >= 1 or None, got {remaining}")
        if self._fixed is not None:
            size = self._fixed
        elif self.step_seconds is None:
            size = 1
        else:
            wanted = (self.target_seconds - self.overhead_seconds) / self.step_seconds
            # The epsilon keeps float rounding (494.99999) from costing a step.
            size = max(1, min(int(wanted + 1e-9), GROWTH * self._longest, MAX_STEPS))
        return size if remaining is None else min(size, remaining)

    def at_most(self, steps: int | None) -> LoopLength | CappedLoopLength:
        """This length with no loop over `steps` steps; loops still teach it.

        A fixed number of steps is the user's choice and stays as given, as
        it does with `steps=None`.
        """
        return self if steps is None or self._fixed is not None else CappedLoopLength(self, steps)

    def record(self, steps: int, seconds: float) -> None:
        """Takes in a loop that ran `steps` steps in `seconds` (host wall time).

        Loops that ran no step tell nothing and are ignored.
        """
        if steps < 1 or seconds <= 0:
            return
        self._loops.append((steps, seconds))
        self._longest = max(self._longest, steps)
        self._estimate()

    def _estimate(self) -> None:
        loops = list(self._loops)
        if len({steps for steps, _ in loops}) > 1:
            overhead = _weighted_intercept(loops)
            if overhead is not None:
                # Never more than the shortest loop took: the rest of it was steps.
                self.overhead_seconds = min(max(overhead, 0.0), min(t for _, t in loops))
        per_step = [max(t - self.overhead_seconds, 0.0) / n for n, t in loops[-3:]]
        self.step_seconds = max(statistics.median(per_step), 1e-9)


def _weighted_intercept(loops: list[tuple[int, float]]) -> float | None:
    """The intercept of `seconds = a + b * steps` fitted with weights 1/seconds².

    Returns `None` when the fit is degenerate or its slope is not positive.
    """
    w = [1.0 / t**2 for _, t in loops]
    sw = sum(w)
    sn = sum(wi * n for wi, (n, _) in zip(w, loops, strict=True))
    st = sum(wi * t for wi, (_, t) in zip(w, loops, strict=True))
    snn = sum(wi * n * n for wi, (n, _) in zip(w, loops, strict=True))
    snt = sum(wi * n * t for wi, (n, t) in zip(w, loops, strict=True))
    denominator = sw * snn - sn * sn
    if denominator <= 0:
        return None
    slope = (sw * snt - sn * st) / denominator
    if slope <= 0:
        return None
    return (st - slope * sn) / sw


class CappedLoopLength:
    """A `LoopLength` whose loops run at most `cap` steps; what they measure goes to it.

    With `"auto"` or a duration, predict caps its loops at an eighth of its
    steps: a loop's outputs are held twice on the device (per step, then
    stacked) until the host copies them into the result, so short loops keep
    the peak memory near the result's own size.
    """

    def __init__(self, length: LoopLength, cap: int) -> None:
        self.length = length
        self.cap = max(1, int(cap))

    def next_size(self, remaining: int | None = None) -> int:
        """The capped length's next size, at most `cap`."""
        return self.length.next_size(self.cap if remaining is None else min(remaining, self.cap))

    def record(self, steps: int, seconds: float) -> None:
        """Passes the loop on to the capped length."""
        self.length.record(steps, seconds)


def as_loop_length(
    iterations_per_loop: int | str | LoopLength | CappedLoopLength,
) -> LoopLength | CappedLoopLength:
    """Returns `iterations_per_loop` as a `LoopLength` (an int or string makes a new one)."""
    if isinstance(iterations_per_loop, (LoopLength, CappedLoopLength)):
        return iterations_per_loop
    return LoopLength(iterations_per_loop)


class LoopLengths:
    """One `LoopLength` per mode and batch size of a `TPUModel`, kept across its runs.

    Step times differ between train, eval and predict and between batch
    sizes; kept across runs, a second `fit` starts at the loop length the
    first one found.
    """

    def __init__(self, iterations_per_loop: int | str) -> None:
        self.setting = iterations_per_loop
        self._lengths: dict[tuple[str, int], LoopLength] = {}

    def get(self, mode: str, batch_size: int) -> LoopLength:
        """Returns the `LoopLength` of `mode` at `batch_size`, made on first use."""
        key = (mode, batch_size)
        if key not in self._lengths:
            self._lengths[key] = LoopLength(self.setting)
        return self._lengths[key]
