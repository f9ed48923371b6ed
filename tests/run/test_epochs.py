"""Tests of tpufit/run/epochs.py: each loop's first step and size, stopping, timing.

The iterator is driven as the run's loops drive it (`walk` below), with
`StreamProgram`, a host-side stand-in for tpufit's `LoopProgram` that reads a
Python iterator the way the device program reads the infeed: one element per
step, stopping at the first stop element. Time comes from a fake clock that
the program advances, so no test depends on the machine's speed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpufit.device.outfeed import LoopResult
from tpufit.run.epochs import EpochIterator
from tpufit.run.loop_length import GROWTH, LoopLength
from tpufit.run.stats import RunStats

FAST = settings(max_examples=100, deadline=None)
STOP = "stop"


def stream(data_steps: int | None):
    """Batch ids 0, 1, ... then (if `data_steps` is given) stop batches forever."""
    if data_steps is None:
        return itertools.count()
    return itertools.chain(range(data_steps), itertools.repeat(STOP))


class FakeClock:
    """Seconds that pass only when something says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class StreamProgram:
    """Runs up to `n` steps, each consuming one element; stops at a stop element.

    Each step takes `step` seconds of the fake `clock`; the first call traces.
    """

    def __init__(self, clock: FakeClock | None = None, step: float = 0.0):
        self.asked: list[int] = []
        self.clock = clock or FakeClock()
        self.step = step

    def run(self, iterator, n: int) -> LoopResult:
        traced = not self.asked
        self.asked.append(n)
        ran, stopped = [], False
        for _ in range(n):
            element = next(iterator)
            if element == STOP:
                stopped = True
                break
            ran.append(element)
        self.clock.now += self.step * len(ran)
        result = LoopResult(np.array(ran, np.int64), {}, len(ran), stopped, traced=traced)
        result.compute_seconds = self.step * len(ran)
        return result


def walk(
    steps,
    setting,
    *,
    data_steps=None,
    program=None,
    limits=(),
    stop_after_loops=None,
    first_step=0,
    stats=None,
):
    """Runs one epoch as the run's loops do; returns loops, program, (first, asked)s, outfeeds."""
    program = program or StreamProgram()
    iterator = stream(data_steps)
    limits = iter(limits)
    length = setting if isinstance(setting, LoopLength) else LoopLength(setting)
    loops = EpochIterator(steps, length, first_step=first_step, stats=stats, clock=program.clock)
    before, after = [], []
    for loop in loops:
        limit = next(limits, None)
        asked = loop.steps if limit is None else min(loop.steps, limit)
        before.append((loop.first_step, asked))
        result = program.run(iterator, asked)
        loops.ran(result)
        if result.steps:
            after.append((loop.first_step, result.outfeed))
        if stop_after_loops is not None and len(after) >= stop_after_loops:
            loops.stop()
    loops.iterator = iterator
    return loops, program, before, after


def test_an_epoch_of_10_in_loops_of_4_runs_4_4_2():
    loops, program, before, after = walk(10, 4)
    assert loops.steps_done == 10
    assert program.asked == [4, 4, 2]
    assert before == [(0, 4), (4, 4), (8, 2)]
    np.testing.assert_array_equal(np.concatenate([o for _, o in after]), np.arange(10))
    assert next(loops.iterator) == 10  # not one batch more was read


@FAST
@given(total=st.integers(0, 400), per_loop=st.integers(1, 64))
def test_loops_run_exactly_the_epoch_in_loops_of_at_most_n(total, per_loop):
    loops, program, before, after = walk(total, per_loop)
    assert loops.steps_done == total == sum(program.asked)
    assert all(n == per_loop for n in program.asked[:-1])
    assert len(program.asked) == -(-total // per_loop)
    firsts = [first for first, _ in before]
    assert firsts == [sum(program.asked[:i]) for i in range(len(program.asked))]
    for first, outfeed in after:
        np.testing.assert_array_equal(outfeed, np.arange(first, first + len(outfeed)))
    assert next(loops.iterator) == total


def test_a_stop_batch_mid_loop_ends_the_epoch():
    loops, program, _, after = walk(None, 3, data_steps=7)
    assert loops.steps_done == 7 and loops.stopped
    assert program.asked == [3, 3, 3]
    np.testing.assert_array_equal(after[-1][1], [6])


def test_a_loop_that_ran_no_step_ends_the_epoch_with_nothing_to_report():
    loops, program, before, after = walk(None, 3, data_steps=6)
    assert loops.steps_done == 6
    assert before == [(0, 3), (3, 3), (6, 3)]
    assert [first for first, _ in after] == [0, 3]
    assert loops.last.steps == 3


def test_the_data_ending_before_the_epoch_ends_it():
    loops, program, _, _ = walk(10, 4, data_steps=5)
    assert loops.steps_done == 5 and program.asked == [4, 4]


@FAST
@given(data_steps=st.integers(0, 300), per_loop=st.integers(1, 64))
def test_without_a_step_count_loops_run_until_the_data_stops(data_steps, per_loop):
    loops, program, _, after = walk(None, per_loop, data_steps=data_steps)
    assert loops.steps_done == data_steps
    # Full loops while data lasts, then the loop that reads the stop batch.
    assert len(program.asked) == data_steps // per_loop + 1
    ran = [outfeed for _, outfeed in after]
    np.testing.assert_array_equal(
        np.concatenate(ran) if ran else np.zeros(0), np.arange(data_steps)
    )


@pytest.mark.parametrize("steps", [None, 100])
def test_stop_ends_the_epoch_after_the_current_loop(steps):
    loops, program, _, _ = walk(steps, 4, stop_after_loops=2)
    assert loops.steps_done == 8 and program.asked == [4, 4]
    assert next(loops.iterator) == 8


def test_a_hook_limiting_a_loop_shifts_the_following_loops():
    loops, program, _, _ = walk(10, 4, limits=[2, None, 1])
    assert program.asked == [2, 4, 1, 3] and loops.steps_done == 10


def test_an_epoch_of_zero_steps_runs_nothing():
    loops, program, before, _ = walk(0, 4)
    assert loops.steps_done == 0 and program.asked == [] and before == []
    assert next(loops.iterator) == 0


def test_a_resumed_epoch_starts_at_its_first_step_and_runs_the_rest():
    loops, program, before, _ = walk(10, 4, first_step=3)
    assert program.asked == [4, 3] and before == [(3, 4), (7, 3)]
    assert loops.steps_done == 10


def test_the_tail_loop_runs_once_after_the_full_batches_unless_stopped():
    program = StreamProgram()
    loops = EpochIterator(5, LoopLength(4), tail=True, clock=program.clock)
    seen = []
    for loop in loops:
        seen.append((loop.first_step, loop.steps, loop.tail))
        loops.ran(program.run(stream(None), loop.steps))
    assert seen == [(0, 4, False), (4, 1, False), (5, 1, True)]
    stopped = EpochIterator(5, LoopLength(4), tail=True, clock=program.clock)
    for loop in stopped:
        stopped.ran(program.run(stream(None), loop.steps))
        stopped.stop()
    assert stopped.steps_done == 4


@FAST
@given(
    data_steps=st.integers(0, 60),
    steps=st.integers(1, 80) | st.none(),
    per_loop=st.integers(1, 9),
)
def test_loops_never_read_past_data_whose_end_is_found_as_it_is_read(data_steps, steps, per_loop):
    program = StreamProgram()
    loops = EpochIterator(
        steps, LoopLength(per_loop), available=lambda n: min(n, data_steps), clock=program.clock
    )
    iterator = stream(None)  # a training stream: no stop batch, every asked step runs
    for loop in loops:
        assert loop.first_step + loop.steps <= data_steps
        loops.ran(program.run(iterator, loop.steps))
    expected = data_steps if steps is None else min(steps, data_steps)
    assert loops.steps_done == expected
    assert loops.ran_out == (steps is None or data_steps < steps)


def test_every_yielded_loop_needs_its_result():
    loops = EpochIterator(8, LoopLength(4))
    with pytest.raises(RuntimeError, match="ran\\(result\\)"):
        for _ in loops:
            pass


# --- loop lengths and stats, on a fake clock ------------------------------------------


def test_a_time_form_sizes_loops_from_the_known_step_time():
    program = StreamProgram(step=0.002)
    length = LoopLength("0.05s")
    loops, program, _, _ = walk(300, length, program=program)
    assert loops.steps_done == 300 and sum(program.asked) == 300
    assert program.asked[:3] == [1, 1, 4]  # the first loop traced: not a measure
    assert all(
        program.asked[i] <= GROWTH * max(program.asked[:i]) for i in range(1, len(program.asked))
    )
    assert program.asked[3:-1] and all(n == 25 for n in program.asked[4:-1])  # 0.05 s / 2 ms
    assert length.step_seconds == pytest.approx(0.002)


def test_an_int_or_auto_setting_makes_its_loop_length():
    assert walk(10, 4)[1].asked == [4, 4, 2]
    assert walk(10, "auto")[1].asked[0] == 1


@FAST
@given(total=st.integers(1, 300), data_steps=st.integers(0, 300) | st.none())
def test_auto_never_asks_more_than_remain(total, data_steps):
    loops, program, before, _ = walk(total, "auto", data_steps=data_steps)
    assert loops.steps_done == (total if data_steps is None else min(total, data_steps))
    assert all(first + asked <= total for first, asked in before)
    assert [first for first, _ in before] == [sum(program.asked[:i]) for i in range(len(before))]


def test_every_loop_reaches_the_stats_and_the_traced_one_counts_as_compile_time():
    program = StreamProgram(step=0.001)
    stats = RunStats("train")
    walk(20, 5, program=program, stats=stats)
    assert stats.steps == 20 and stats.loop_sizes == [5, 5, 5, 5]
    assert stats.timed_steps == 15
    assert stats.compile_seconds == pytest.approx(0.005)
    assert stats.seconds == pytest.approx(0.015)
    assert stats.compute_seconds == pytest.approx(0.015)
