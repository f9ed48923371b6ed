"""Tests of tpufit/runner.py: loop accounting, stopping, and the calls between loops.

`run_loops` only needs an object with `.run(iterator, n) -> LoopResult`, so the
tests drive it with `StreamProgram`, a host-side stand-in for tpufit's
`LoopProgram` that reads a Python iterator the way the device program reads
the infeed: one element per step, stopping at the first stop element.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpufit.device.programs import LoopResult
from tpufit.run.loop_length import GROWTH, LoopLength
from tpufit.run.runner import loop_sizes, run_loops
from tpufit.run.stats import RunStats

FAST = settings(max_examples=100, deadline=None)
STOP = "stop"


def stream(data_steps: int | None):
    """Batch ids 0, 1, ... then (if `data_steps` is given) stop batches forever."""
    if data_steps is None:
        return itertools.count()
    return itertools.chain(range(data_steps), itertools.repeat(STOP))


class StreamProgram:
    """Runs up to `n` steps, each consuming one element; stops at a stop element."""

    def __init__(self):
        self.asked: list[int] = []

    def run(self, iterator, n: int) -> LoopResult:
        self.asked.append(n)
        ran = []
        for _ in range(n):
            element = next(iterator)
            if element == STOP:
                return LoopResult(np.array(ran, np.int64), {}, len(ran), True)
            ran.append(element)
        return LoopResult(np.array(ran, np.int64), {}, len(ran), False)


class Recorder:
    """Collects what run_loops reports between loops."""

    def __init__(self, stop_after_loops: int | None = None):
        self.before: list[tuple[int, int]] = []
        self.after: list[tuple[int, np.ndarray]] = []
        self.stop_checks = 0
        self.stop_after_loops = stop_after_loops

    def before_loop(self, first: int, asked: int) -> None:
        self.before.append((first, asked))

    def after_loop(self, first: int, result: LoopResult) -> None:
        self.after.append((first, result.outfeed))

    def stop_requested(self) -> bool:
        self.stop_checks += 1
        return self.stop_after_loops is not None and len(self.after) >= self.stop_after_loops


def run(data_steps, total_steps, iterations_per_loop, recorder=None):
    recorder = recorder or Recorder()
    program = StreamProgram()
    iterator = stream(data_steps)
    done = run_loops(
        program,
        iterator,
        total_steps=total_steps,
        iterations_per_loop=iterations_per_loop,
        before_loop=recorder.before_loop,
        after_loop=recorder.after_loop,
        stop_requested=recorder.stop_requested,
    )
    return done, program, recorder, iterator


# --- loop_sizes --------------------------------------------------------------------


def test_loop_sizes_of_the_issue_example():
    assert loop_sizes(10, 4) == [4, 4, 2]


@pytest.mark.parametrize(
    ("total", "per_loop", "sizes"),
    [(0, 4, []), (3, 4, [3]), (8, 4, [4, 4]), (5, 1, [1] * 5), (7, 100, [7])],
)
def test_loop_sizes_edge_cases(total, per_loop, sizes):
    assert loop_sizes(total, per_loop) == sizes


@FAST
@given(total=st.integers(0, 5000), per_loop=st.integers(1, 300))
def test_loop_sizes_run_exactly_the_total_in_loops_of_at_most_n(total, per_loop):
    sizes = loop_sizes(total, per_loop)
    assert sum(sizes) == total
    assert all(1 <= size <= per_loop for size in sizes)
    assert all(size == per_loop for size in sizes[:-1])
    assert len(sizes) == -(-total // per_loop)


# --- run_loops ---------------------------------------------------------------------


def test_run_loops_runs_the_issue_example_as_4_4_2():
    done, program, recorder, iterator = run(None, 10, 4)
    assert done == 10
    assert program.asked == [4, 4, 2]
    assert recorder.before == [(0, 4), (4, 4), (8, 2)]
    assert [first for first, _ in recorder.after] == [0, 4, 8]
    np.testing.assert_array_equal(
        np.concatenate([outfeed for _, outfeed in recorder.after]), np.arange(10)
    )
    assert next(iterator) == 10  # not one batch more was read


@FAST
@given(total=st.integers(0, 400), per_loop=st.integers(1, 64))
def test_run_loops_asks_exactly_the_loop_sizes(total, per_loop):
    done, program, recorder, iterator = run(None, total, per_loop)
    assert done == total
    assert program.asked == loop_sizes(total, per_loop)
    firsts = [first for first, _ in recorder.before]
    assert firsts == [sum(program.asked[:i]) for i in range(len(program.asked))]
    assert [first for first, _ in recorder.after] == firsts
    for first, outfeed in recorder.after:
        np.testing.assert_array_equal(outfeed, np.arange(first, first + len(outfeed)))
    assert next(iterator) == total


def test_run_loops_stops_at_a_stop_batch_mid_loop():
    done, program, recorder, _ = run(7, None, 3)
    assert done == 7
    assert program.asked == [3, 3, 3]
    assert [first for first, _ in recorder.after] == [0, 3, 6]
    np.testing.assert_array_equal(recorder.after[-1][1], [6])


def test_run_loops_skips_after_loop_for_a_loop_that_ran_no_step():
    done, program, recorder, _ = run(6, None, 3)
    assert done == 6
    assert program.asked == [3, 3, 3]
    assert recorder.before == [(0, 3), (3, 3), (6, 3)]
    assert [first for first, _ in recorder.after] == [0, 3]


def test_run_loops_stops_when_the_data_ends_before_the_step_budget():
    done, program, recorder, _ = run(5, 10, 4)
    assert done == 5
    assert program.asked == [4, 4]
    assert [first for first, _ in recorder.after] == [0, 4]


@FAST
@given(data_steps=st.integers(0, 300), per_loop=st.integers(1, 64))
def test_run_loops_without_a_budget_runs_until_the_data_stops(data_steps, per_loop):
    done, program, recorder, _ = run(data_steps, None, per_loop)
    assert done == data_steps
    # Full loops while data lasts, then the loop that reads the stop batch.
    assert len(program.asked) == data_steps // per_loop + 1
    assert all(n == per_loop for n in program.asked)
    ran = [outfeed for _, outfeed in recorder.after]
    np.testing.assert_array_equal(
        np.concatenate(ran) if ran else np.zeros(0), np.arange(data_steps)
    )


@pytest.mark.parametrize("total_steps", [None, 100])
def test_run_loops_stops_when_a_stop_is_requested(total_steps):
    recorder = Recorder(stop_after_loops=2)
    done, program, recorder, iterator = run(None, total_steps, 4, recorder)
    assert done == 8
    assert program.asked == [4, 4]
    assert recorder.stop_checks == 3  # before the first loop, then after each
    assert [first for first, _ in recorder.after] == [0, 4]
    assert next(iterator) == 8


def test_run_loops_asks_for_a_stop_before_the_first_loop_and_after_every_loop():
    recorder = Recorder()
    done, program, recorder, _ = run(None, 10, 4, recorder)
    assert done == 10
    assert recorder.stop_checks == len(program.asked) + 1 == 4


def test_run_loops_runs_nothing_when_a_stop_was_requested_before_it_began():
    done, program, recorder, _ = run(None, 10, 4, Recorder(stop_after_loops=0))
    assert done == 0
    assert program.asked == [] and recorder.before == []


def test_run_loops_runs_the_steps_before_loop_returns():
    recorder = Recorder()
    program = StreamProgram()
    limits = iter([2, None, 1])
    done = run_loops(
        program,
        stream(None),
        total_steps=10,
        iterations_per_loop=4,
        before_loop=lambda first, asked: next(limits, None),
        after_loop=recorder.after_loop,
        stop_requested=recorder.stop_requested,
    )
    assert program.asked == [2, 4, 1, 3]
    assert done == 10


def test_run_loops_with_zero_steps_runs_nothing():
    done, program, recorder, iterator = run(None, 0, 4)
    assert done == 0
    assert program.asked == []
    assert recorder.before == [] and recorder.after == []
    assert next(iterator) == 0


# --- loop lengths and stats ----------------------------------------------------------


class TimedProgram(StreamProgram):
    """A `StreamProgram` whose steps take `step` seconds and whose first call traces."""

    def __init__(self, step: float):
        super().__init__()
        self.step = step
        self.traces = 0

    def run(self, iterator, n: int) -> LoopResult:
        if not self.asked:
            self.traces += 1
        time.sleep(self.step * n)
        result = super().run(iterator, n)
        result.compute_seconds = self.step * result.steps
        return result


def test_run_loops_with_a_time_form_sizes_loops_from_the_known_step_time():
    program = TimedProgram(step=0.002)
    length = LoopLength("0.05s")
    done = run_loops(
        program,
        stream(None),
        total_steps=300,
        iterations_per_loop=length,
        before_loop=lambda first, asked: None,
        after_loop=lambda first, result: None,
        stop_requested=lambda: False,
    )
    assert done == 300 and sum(program.asked) == 300
    assert program.asked[:3] == [1, 1, 4]  # the first loop traced: not a measure
    assert all(
        program.asked[i] <= GROWTH * max(program.asked[:i]) for i in range(1, len(program.asked))
    )
    # 0.05 s of 2 ms steps is 25; sleeps overshoot on a busy machine, never undershoot.
    settled = program.asked[4:-1]
    assert settled and all(12 <= n <= 25 for n in settled)
    assert length.step_seconds == pytest.approx(0.002, rel=0.5)


def test_run_loops_takes_an_int_or_a_setting_as_before():
    for setting in (4, "auto"):
        done, program, _, _ = run(None, 10, setting)
        assert done == 10 and sum(program.asked) == 10
    assert run(None, 10, 4)[1].asked == [4, 4, 2]
    assert run(None, 10, "auto")[1].asked[0] == 1


@FAST
@given(total=st.integers(1, 300), data_steps=st.integers(0, 300) | st.none())
def test_run_loops_with_auto_never_asks_more_than_remain(total, data_steps):
    done, program, recorder, _ = run(data_steps, total, "auto")
    assert done == (total if data_steps is None else min(total, data_steps))
    firsts = [first for first, _ in recorder.before]
    assert all(first + asked <= total for first, asked in recorder.before)
    assert firsts == [sum(program.asked[:i]) for i in range(len(program.asked))]


def test_run_loops_gives_every_loop_to_the_stats_and_the_traced_one_as_compile_time():
    program = TimedProgram(step=0.001)
    stats = RunStats("train")
    run_loops(
        program,
        stream(None),
        total_steps=20,
        iterations_per_loop=5,
        before_loop=lambda first, asked: None,
        after_loop=lambda first, result: None,
        stop_requested=lambda: False,
        stats=stats,
    )
    assert stats.steps == 20 and stats.loop_sizes == [5, 5, 5, 5]
    assert stats.timed_steps == 15
    assert stats.compile_seconds >= 0.005
    assert stats.seconds >= 0.015
    assert stats.compute_seconds == pytest.approx(0.015)
