"""The looped device programs: up to `n` steps per host call, and their outfeed.

A program is one `tf.function` whose `tf.range` loop pulls a batch from the
distributed iterator and runs the step under `strategy.run`, `n` times, the
loop length being a tensor so a shorter last loop does not retrace. The step is
its own `tf.function`, XLA-compiled where allowed and faster (`jit_choice.py`),
traced once and called from the loop. Each step's outputs are written to
`TensorArray`s (the outfeed) and handed to the host when the loop returns:
per-step losses and logs in train and eval, per-step predictions and masks in
predict.

Over resident arrays (`tpufit.data.resident`) there is no iterator: the loop
reads each step's batch through a `resident.Cursor`, gathering it from the
device tensors at a position the loop carries, and the run's
`ResidentIterator` moves on by the batches read. That loop is traced once per
element spec, with the arrays' row count left open, so new arrays of the same
kind do not retrace.

The loop also times itself with `tf.timestamp`: how long each step's
`get_next` on the infeed took to hand it its batch, and how long the step ran.
`run_stats.py` turns these into the input-bound / compute-bound analysis; the
host cannot see this split.

No loop wraps its step in a `tf.cond`: under `MirroredStrategy` a conditional
step fails if it runs a collective — the optimizer's cross-replica
`merge_call` (keras-team/keras#19246), or the all-reduce that weights a masked
output's replicas by their unmasked timesteps, in training and evaluation
alike. So training loops run `n` steps, the host sizing `n` from the known
number of batches. Evaluation and prediction loops also end at the first stop
batch, and still run their step unconditionally: each batch is read ahead, at
the end of the previous step and only if another step may run, and the loop's
own condition reads its stopping signal. They read exactly the batches their
steps ran, and the stop batch that ended them, so loops sharing a stream lose
no batch.

A training loop with a NaN guard (`NanGuard`) also ends early, at the first
step whose loss (or gradients) is not finite: the loop's own condition reads
the step's flag.
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tpufit.config import Mode
from tpufit.data import resident
from tpufit.device import native_logs
from tpufit.device.finite import NanGuard
from tpufit.device.jit_choice import JitChoice
from tpufit.device.loop_reads import Stream, next_timed, rebuilt, tensors, timed
from tpufit.device.outfeed import LoopResult, NonFiniteStep, joined


def _spec_key(element_spec) -> str:
    return repr(element_spec)


class LoopProgram:
    """One mode's looped device program.

    Args:
        strategy: The `tf.distribute` strategy the step runs under.
        replica_step: `(data, signals) -> outputs`, run on each replica.
        reduce: Maps the per-replica outputs (in cross-replica context) to
            `(per_step, latest)`: values the outfeed collects for every step,
            and values of which only the last step's is kept (carried through
            the loop, not stored per step).
        stops: Whether the loop honours the stopping signal (not in training).
        jit_compile: `True`, `False` or `"auto"` (see `RunConfig`).
        mode: The mode the program runs, for messages and per-mode settings.
        first_step_eagerly: Run the very first step eagerly, outside any
            trace (training programs only), so that variables the step
            creates lazily (a custom step's optimizer slots) exist before the
            loop is traced: created inside the traced loop, they fail under
            `MirroredStrategy`.
        step_counters: int64 variables the program adds its steps to, on the
            device, in the same call that runs them (the global step, the
            step in the epoch): a loop that completed is always counted, even
            if the host is interrupted right after it. A step whose update
            was withheld is not counted.
        nan_guard: What a training loop does at a step whose per-step
            `"non_finite"` flag is set (the replica step must match it).
        eager: Run every step eagerly, one after the other, with no
            `tf.function` anywhere (the model was compiled with
            `run_eagerly=True`): slow, but a debugger stops inside the step.
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        replica_step: Callable,
        reduce: Callable,
        *,
        stops: bool,
        jit_compile: bool | str,
        mode: Mode,
        first_step_eagerly: bool = False,
        step_counters: Sequence[tf.Variable] = (),
        nan_guard: NanGuard = NanGuard.OFF,
        eager: bool = False,
    ) -> None:
        if stops and (first_step_eagerly or nan_guard is not NanGuard.OFF):
            raise ValueError("first_step_eagerly and nan_guard are for training programs")
        self._guard = nan_guard
        self._eager = eager
        self._eager_first = first_step_eagerly
        self._counters = tuple(step_counters)
        self._strategy = strategy
        self._replica_step = replica_step
        self._reduce = reduce
        self._stops = stops
        self._jit = JitChoice(jit_compile, mode)
        self.mode = mode
        self.traces = 0
        self._output_specs: dict[Any, Any] = {}
        self._prepared_iterator: Callable[[], Any] = lambda: None
        # A partial, not the bound method: TensorFlow counts retracing per code object, so
        # all programs would share one count and warn on a few traces of different programs.
        # No AutoGraph: the loops are written as `tf.while_loop`s (see `_steps`).
        self._loop_fn = tf.function(functools.partial(LoopProgram._loop, self), autograph=False)
        self._resident_fns: dict[Any, Any] = {}

    @property
    def jit_compile(self) -> bool | None:
        """Whether the step runs with XLA; `None` until the first loop (or export) decides."""
        if self._eager:
            return False
        return self._jit.jit_compile

    def decide_jit(self, element_spec) -> bool:
        """Makes the XLA decision for batches of `element_spec` now, if no run made it yet.

        A run makes it on its first loop; made here first (for an export),
        every run after keeps it.

        Returns:
            Whether the step runs with XLA.

        Raises:
            InvalidArgumentError: `jit_compile=True` for a step XLA cannot compile.
        """
        self._jit.prepare(self._strategy, self._one_step, element_spec)
        return bool(self.jit_compile)

    # As Keras's own step functions: the step is traced as written, not converted by
    # AutoGraph, whose conversion of the step and all it calls was most of a first call.
    @tf.autograph.experimental.do_not_convert
    def _one_step(self, element):
        data, signals = element
        outputs = self._strategy.run(self._replica_step, args=(data, signals))
        return self._reduce(self._strategy, outputs)

    def _prepare(self, element_spec) -> None:
        key = _spec_key(element_spec)
        if key not in self._output_specs:
            self._jit.prepare(self._strategy, self._one_step, element_spec)
            step_fn = next(iter(self._jit.steps.values()))
            concrete = step_fn.get_concrete_function(element_spec)
            self._output_specs[key] = tf.nest.map_structure(
                lambda t: tf.TensorSpec(t.shape, t.dtype), concrete.structured_outputs
            )

    def _stop_requested(self, element) -> tf.Tensor:
        stops = self._strategy.experimental_local_results(element[1]["stop"])
        return tf.reduce_any(tf.stack([tf.reduce_any(s) for s in stops]))

    def _loop(self, iterator, num_steps):
        self.traces += 1
        specs = self._output_specs[_spec_key(iterator.element_spec)]
        step_fn = next(iter(self._jit.steps.values()))
        return self._steps(Stream(iterator), num_steps, step_fn, *specs)

    def _resident_loop(self, spec_key: str, static: resident.Static, inputs, start, num_steps):
        """The loop over resident data, each step's batch gathered inside it (`resident.Cursor`)."""
        self.traces += 1
        specs = self._output_specs[spec_key]
        cursor = resident.Cursor(inputs, start, static, self._strategy)
        return self._steps(cursor, num_steps, next(iter(self._jit.steps.values())), *specs)

    def _resident_call(self, iterator: resident.ResidentIterator, num_steps: tf.Tensor):
        """Runs the resident loop, traced once per element spec for data of any row count."""
        spec_key = _spec_key(iterator.element_spec)
        key = (spec_key, iterator.static)
        if key not in self._resident_fns:
            # The trace keeps no run's iterator: its tensors are arguments, not captures.
            loop = functools.partial(self._resident_loop, spec_key, iterator.static)
            self._resident_fns[key] = tf.function(loop, autograph=False).get_concrete_function(
                iterator.input_specs(),
                tf.TensorSpec([], tf.int64),
                tf.TensorSpec([], tf.int32),
            )
        start = tf.constant(iterator.position, tf.int64)
        return self._resident_fns[key](iterator.inputs, start, num_steps)

    def _steps(self, source, num_steps, step_fn, per_step_spec, latest_spec):
        # Written as `tf.while_loop`s, not Python loops for AutoGraph: converting this
        # function was the largest part of a new model's first call (about 0.4 s of CPU).
        arrays = tf.nest.map_structure(
            lambda s: tf.TensorArray(s.dtype, size=0, dynamic_size=True, element_shape=s.shape),
            per_step_spec,
        )
        latest = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), latest_spec)
        clock = tf.timestamp()  # when the previous step ended
        position = source.start()  # the resident infeed's place, carried by the loop
        waited = tf.constant(0.0, tf.float64)
        computed = tf.constant(0.0, tf.float64)
        carried = (tf.constant(0), arrays, latest, clock, position, waited, computed)
        loop = self._stopping_steps if self._stops else self._training_steps
        return loop(source, num_steps, step_fn, carried)

    def _training_steps(self, source, num_steps, step_fn, carried):
        # `num_steps` steps, with nothing but the step (and its clock) inside; a guarded
        # loop's condition also ends it after a non-finite step (no `cond`).
        def keep_going(steps, arrays, latest, clock, position, waited, computed, halted):
            return tf.logical_and(steps < num_steps, tf.logical_not(halted))

        def step(steps, arrays, latest, clock, position, waited, computed, halted):
            element, position, ready, waited = next_timed(source, position, clock, waited)
            with tf.control_dependencies([ready]):  # else `ready` may be read mid-step
                per_step, latest = step_fn(element)
            arrays = tf.nest.map_structure(lambda a, v: a.write(steps, v), arrays, per_step)
            computed, clock = timed(computed, ready, per_step, latest)
            return (
                steps + 1,
                arrays,
                latest,
                clock,
                position,
                waited,
                computed,
                self._halts(per_step),
            )

        steps, arrays, latest, _, _, waited, computed, halted = tf.while_loop(
            keep_going, step, (*carried, tf.constant(False))
        )
        withheld = tf.cast(halted, tf.int32) if self._guard is NanGuard.WITHHOLD else 0
        self._count(steps - withheld)
        stacked = tf.nest.map_structure(lambda a: a.stack(), arrays)
        return stacked, latest, steps, tf.constant(False), halted, waited, computed

    def _stopping_steps(self, source, num_steps, step_fn, carried):
        # Evaluation and prediction also end at a stop batch, and still no `cond` wraps the
        # step (its collectives would fail in one): the loop's condition reads the stop signal
        # of a batch read ahead, at the end of the previous step and only if another step may
        # run, so the loop reads the batches its steps ran and, if it stops, the stop batch.
        # `run` asks for at least one step: the first batch is read unasked.
        steps, arrays, latest, clock, position, waited, computed = carried
        first, position, ready, waited = next_timed(source, position, clock, waited)
        held = tensors(first)  # carried as its tensors (`rebuilt`): no loop variable is None

        def keep_going(steps, arrays, latest, clock, position, waited, computed, ready, held):
            stop = self._stop_requested(rebuilt(first, held))
            return tf.logical_and(steps < num_steps, tf.logical_not(stop))

        def step(steps, arrays, latest, clock, position, waited, computed, ready, held):
            with tf.control_dependencies([ready]):
                per_step, latest = step_fn(rebuilt(first, held))
            arrays = tf.nest.map_structure(lambda a, v: a.write(steps, v), arrays, per_step)
            computed, clock = timed(computed, ready, per_step, latest)
            steps += 1

            def read_next():
                element, new_position, new_ready, new_waited = next_timed(
                    source, position, clock, waited
                )
                return new_position, new_ready, new_waited, tensors(element)

            position, ready, waited, held = tf.cond(
                steps < num_steps, read_next, lambda: (position, ready, waited, held)
            )
            return steps, arrays, latest, clock, position, waited, computed, ready, held

        steps, arrays, latest, _, _, waited, computed, _, _ = tf.while_loop(
            keep_going,
            step,
            (steps, arrays, latest, clock, position, waited, computed, ready, held),
        )
        stacked = tf.nest.map_structure(lambda a: a.stack(), arrays)
        stopped = steps < num_steps  # only a stop batch ends the loop early
        return stacked, latest, steps, stopped, tf.constant(False), waited, computed

    def _halts(self, per_step) -> tf.Tensor:
        if self._guard is NanGuard.OFF:
            return tf.constant(False)
        return per_step["non_finite"]

    def _non_finite(self, steps: int, halted: bool) -> NonFiniteStep | None:
        return NonFiniteStep(steps - 1, self._guard is NanGuard.WITHHOLD) if halted else None

    def _count(self, steps) -> None:
        for counter in self._counters:
            counter.assign_add(tf.cast(steps, tf.int64))

    def run(self, iterator, num_steps: int) -> LoopResult:
        """Runs one loop of up to `num_steps` steps and returns its outfeed.

        Args:
            iterator: An iterator over the distributed infeed.
            num_steps: How many steps to run, at least 1 (a tensor inside the
                program, so any value reuses the same trace).

        Returns:
            The `LoopResult`.

        Raises:
            ValueError: `num_steps` is below 1 (the loop reads its first batch unasked).
        """
        if num_steps < 1:
            raise ValueError(f"a loop runs at least one step; received num_steps={num_steps}")
        if self._eager:
            return self._run_eagerly(iterator, num_steps)
        if self._eager_first:
            self._eager_first = False
            first = self._run_one_step_eagerly(iterator)
            if num_steps == 1 or first.non_finite is not None:
                return first
            return joined(first, self.run(iterator, num_steps - 1))
        # The program's first run compiles it, which may be the process's first XLA compile.
        quiet = native_logs.info_lines_dropped() if self.traces == 0 else contextlib.nullcontext()
        with quiet:
            if iterator is not self._prepared_iterator():
                # Once per iterator, not per loop: the spec's key is built from its repr.
                # A weak reference, so a finished run's prefetching iterator is not kept alive.
                self._prepare(iterator.element_spec)
                self._prepared_iterator = weakref.ref(iterator)
            traces = self.traces
            loop = self._resident_call if _is_resident(iterator) else self._loop_fn
            outfeed, latest, steps, stopped, halted, waited, computed = loop(
                iterator, tf.constant(num_steps, tf.int32)
            )
        steps = int(steps)
        if _is_resident(iterator):
            iterator.advance(steps + int(bool(stopped)))  # a stop batch was read too
        outfeed = tf.nest.map_structure(lambda t: t.numpy()[:steps], outfeed)
        latest = tf.nest.map_structure(lambda t: t.numpy(), latest)
        return LoopResult(
            outfeed,
            latest,
            steps,
            bool(stopped),
            float(waited),
            float(computed),
            traced=self.traces != traces,
            non_finite=self._non_finite(steps, bool(halted)),
        )

    def _run_eagerly(self, iterator, num_steps: int) -> LoopResult:
        result = self._run_one_step_eagerly(iterator)
        for _ in range(num_steps - 1):
            if result.stopped or result.non_finite is not None:
                break
            result = joined(result, self._run_one_step_eagerly(iterator))
        return result

    def _run_one_step_eagerly(self, iterator) -> LoopResult:
        start = time.perf_counter()
        element = next(iterator)
        ready = time.perf_counter()
        if self._stops and bool(self._stop_requested(element)):
            return LoopResult({}, {}, 0, True, ready - start)
        per_step, latest = self._one_step(element)
        non_finite = self._non_finite(1, bool(self._halts(per_step)))
        self._count(0 if non_finite is not None and non_finite.withheld else 1)
        outfeed = tf.nest.map_structure(lambda t: _numpy(t)[None], per_step)
        latest = tf.nest.map_structure(_numpy, latest)
        done = time.perf_counter()
        return LoopResult(
            outfeed,
            latest,
            1,
            False,
            ready - start,
            done - ready,
            traced=True,
            non_finite=non_finite,
        )


def _is_resident(iterator) -> bool:
    return isinstance(iterator, resident.ResidentIterator)


def _numpy(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
