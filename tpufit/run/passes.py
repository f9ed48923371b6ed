"""How a run's epochs walk its passes over the data, as Keras 3's `EpochIterator` walks them.

A *pass* is one read of the data from its start to its end: `steps` steps,
the last of them the partial last batch at its true size when the layout runs
it from a stream of its own (`tail`). Keras 3 keeps one iterator across the
epochs of a `fit`:

- without `steps_per_epoch`, an epoch is one pass;
- with `steps_per_epoch=S`, an epoch takes the next `S` steps of the current
  pass; where the pass ends first, the epoch ends there with Keras's warning
  ("Your input ran out of data"), and the next epoch starts a new pass. With
  `S` larger than the pass, every epoch is one pass and warns.

An epoch therefore never spans two passes. Data of unknown length (endless,
or a generator whose end is found as it is read) gives epochs of `S` steps,
or one epoch that runs until the data ends or training is stopped.
`evaluate` and `predict` read one epoch of this kind, their `steps` as `S`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator

from tpufit import errors
from tpufit.data.infeed import Infeed, Lookahead

RAN_OUT = (
    "Your input ran out of data; interrupting training. Make sure that your dataset or "
    "generator can generate at least `steps_per_epoch * epochs` batches. You may need to "
    "use the `.repeat()` function when building your dataset."
)


def warn_ran_out(stacklevel: int) -> None:
    """Warns as Keras does where an epoch's data ends before its `steps_per_epoch` (or `steps`)."""
    warnings.warn(RAN_OUT, stacklevel=stacklevel + 1)


@dataclasses.dataclass(frozen=True)
class Span:
    """One epoch's share of a pass.

    Attributes:
        start: The pass step the epoch starts at.
        steps: The epoch's steps, tail included; `None` to run until the data
            ends (or a stop).
        main: Of those, the steps read from the main stream (`None` likewise).
        tail: Whether the epoch ends with the pass's tail step.
        short: Whether the pass ends before the epoch's `steps_per_epoch`.
    """

    start: int
    steps: int | None
    main: int | None
    tail: bool
    short: bool


@dataclasses.dataclass(frozen=True)
class Passes:
    """The passes of a run's data and the epoch length asked of them.

    Attributes:
        steps: Steps of one pass, tail included, or `None` when unknown
            (endless, or a length found only by reading).
        tail: Whether a pass's last step is the tail (its own stream).
        steps_per_epoch: `fit`'s `steps_per_epoch` (`evaluate`'s `steps`), or `None`.
    """

    steps: int | None
    tail: bool
    steps_per_epoch: int | None

    def span(self, start: int) -> Span:
        """Returns the span of the epoch that starts at pass step `start`.

        Example:
            >>> Passes(10, tail=True, steps_per_epoch=4).span(8)
            Span(start=8, steps=2, main=1, tail=True, short=True)
        """
        wanted = self.steps_per_epoch
        if self.steps is None:
            return Span(start, wanted, wanted, False, False)
        left = self.steps - start
        steps = left if wanted is None else min(wanted, left)
        tail = self.tail and steps == left
        short = wanted is not None and steps < wanted
        return Span(start, steps, steps - int(tail), tail, short)

    def epoch_start(self, epoch: int) -> tuple[int, int]:
        """Returns `(pass, step in the pass)` where the `epoch`-th epoch of a run starts.

        Example:
            >>> Passes(10, tail=False, steps_per_epoch=4).epoch_start(4)  # 4, 4, 2 | 4
            (1, 4)
        """
        per_epoch = self.steps_per_epoch
        if self.steps is None:
            return (0, epoch * per_epoch) if per_epoch is not None else (epoch, 0)
        if per_epoch is None or per_epoch >= self.steps:
            return epoch, 0
        epochs_per_pass = -(-self.steps // per_epoch)
        return epoch // epochs_per_pass, epoch % epochs_per_pass * per_epoch

    def batches_before(self, epoch: int, step: int) -> tuple[int, int]:
        """Returns the `(main, tail)` batches read before step `step` of a run's `epoch`-th epoch.

        Passes of unknown length count as never ending: a generator's
        resumed run starts that many batches into it.
        """
        passes, start = self.epoch_start(epoch)
        if self.steps is None:
            return start + step, 0
        main_per_pass = self.steps - int(self.tail)
        return passes * main_per_pass + start + step, passes if self.tail else 0

    def lengths(self, epoch: int) -> Iterator[int | None]:
        """Yields the steps of a run's epochs from its `epoch`-th on (`None`: to the data's end)."""
        while True:
            yield self.span(self.epoch_start(epoch)[1]).steps
            epoch += 1


def of_feed(feed: Infeed, steps_per_epoch: int | None, drop_remainder: bool = False) -> Passes:
    """Returns the passes of an infeed: its main stream's `steps_per_pass`, and its tail.

    Args:
        feed: The infeed.
        steps_per_epoch: `fit`'s `steps_per_epoch` (`evaluate`'s `steps`), or `None`.
        drop_remainder: `fit`'s `drop_remainder`, for the message.

    Raises:
        InvalidArgumentError: A pass has no step (all dropped by `drop_remainder`).
    """
    tail = feed.tail is not None
    main_steps = feed.steps_per_pass
    steps = None if main_steps is None else main_steps + int(tail)
    if steps == 0:
        raise errors.invalid_argument(
            "drop_remainder",
            drop_remainder,
            "False, or more rows than batch_size: no full batch is left to train on",
            what="The training data makes no batch",
        )
    return Passes(steps, tail, steps_per_epoch)


def epochs_until(passes: Passes, max_steps: int, global_step: int, epoch: int, step: int) -> int:
    """Returns the number of epochs (counted from 0) a run needs to reach global step `max_steps`.

    Args:
        passes: The run's passes.
        max_steps: The global step to reach.
        global_step: The global step at the run's start.
        epoch: The run's first epoch, counted from its first pass's first epoch.
        step: The step of `epoch` it starts at.

    Example:
        >>> epochs_until(Passes(10, False, 4), 25, 0, 0, 0)   # epochs of 4, 4, 2, 4, 4, 2, 4
        7
    """
    remaining = max_steps - global_step
    lengths = passes.lengths(epoch)
    left = next(lengths)
    if left is not None:
        left -= step
    while left is not None and remaining > left:
        remaining -= left
        epoch += 1
        left = next(lengths)
    return epoch + 1


class Walk:
    """Where a `fit` is in its passes: the step of the pass its next epoch starts at.

    Keras's epoch iterator keeps this state across the epochs of a `fit`. The
    walk also learns the length of a pass found as it is read (`lookahead`:
    a generator streamed without `steps_per_epoch`), and whether the data
    can be read again once its pass has ended.

    Args:
        passes: The data's passes and `steps_per_epoch`.
        lookahead: Reads a one-shot source ahead of the run, or `None`.
        step: The step of the pass the first epoch starts at.

    Attributes:
        passes: As given, with the pass's length once the lookahead found it.
        step: The step of the pass the next epoch starts at.
    """

    def __init__(self, passes: Passes, lookahead: Lookahead | None, step: int = 0) -> None:
        self.passes = passes
        self.step = step
        self._lookahead = lookahead
        self._passes_done = 0

    @property
    def exhausted(self) -> bool:
        """Whether the data's only pass has ended (a one-shot source not kept)."""
        return self._passes_done > 0 and self._lookahead is not None and not self._lookahead.repeats

    def span(self) -> Span:
        """The span of the next epoch."""
        return self.passes.span(self.step)

    def available(self, span: Span) -> Callable[[int], int] | None:
        """For a pass still being found: how many of `span`'s first `n` steps exist, else `None`."""
        if self._lookahead is None or self.passes.steps is not None:
            return None
        lookahead = self._lookahead
        return lambda n: lookahead.steps_within(span.start + n) - span.start

    def advance(self, span: Span, steps_done: int, ran_out: bool) -> None:
        """Moves past an epoch of `span` that ran `steps_done` steps (its first step included)."""
        self.step = span.start + steps_done
        if self.passes.steps is None and self._lookahead is not None:
            # Read one step ahead: an epoch that ends exactly where the pass ends is its last.
            if ran_out or self._lookahead.steps_within(self.step + 1) == self.step:
                self.passes = dataclasses.replace(self.passes, steps=self.step)
        if self.passes.steps is not None and self.step >= self.passes.steps:
            self.step = 0
            self._passes_done += 1


def ran_short(span: Span, steps_done: int, ran_out: bool) -> bool:
    """Whether an epoch's data ended before its `steps_per_epoch` (where Keras warns).

    Args:
        span: The epoch's span.
        steps_done: Its steps that ran, its first step included.
        ran_out: Whether it ended because its data ran out.
    """
    if ran_out:
        return span.steps is not None
    return span.short and steps_done >= span.steps
