"""Whether a program's step runs XLA-compiled: as asked, or, for "auto", as measured faster.

XLA is not always the faster choice: on a CPU it fuses a small dense model's
many ops (about 1.5x faster for the benchmark MLP) but its convolutions are
about 3x slower than TensorFlow's oneDNN kernels (the benchmark CNN). So
`"auto"` does not guess. Where XLA can compile the step (one replica, not a
TPU), the program holds both steps, picks one per loop with a `tf.cond`
(one trace), and runs its first loops alternately with each; each variant's
first loop pays its compile and is not counted, the next is timed by the
program's own step clock, and from then on the faster one runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import tensorflow as tf

from tpufit import errors


def _is_tpu(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.TPUStrategy)


class JitChoice:
    """Holds a program's step functions and which of them to run.

    Args:
        requested: `True`, `False` or `"auto"` (see `RunConfig`).
        name: The mode, for messages.
        measure: For `"auto"`: time both steps (else XLA wherever it compiles).
            Measuring runs the first loops with either step, whose results
            differ in the last bits (and in dropout's random numbers), so a
            run that must be reproduced exactly (resumed from a checkpoint,
            or laid out in other loops) does not measure.
    """

    def __init__(self, requested: bool | str, name: str, measure: bool = True) -> None:
        self.requested = requested
        self.measure = measure
        self.name = name
        self.steps: dict[bool, Callable] = {}
        self.timings: dict[bool, list[float]] = {True: [], False: []}
        self._decided: bool | None = None

    @property
    def jit_compile(self) -> bool | None:
        """Whether the step runs with XLA; `None` before it is known (not prepared, measuring)."""
        if self._decided is not None or not self.steps:
            return self._decided
        return None if self.measuring else next(iter(self.steps))

    @property
    def measuring(self) -> bool:
        """Whether both steps are held and the faster is not known yet."""
        return len(self.steps) == 2 and self._decided is None

    def prepare(self, strategy: tf.distribute.Strategy, one_step: Callable, element_spec) -> None:
        """Makes the step function(s) for `one_step`, once.

        Raises:
            InvalidArgumentError: `jit_compile=True` for a step XLA cannot compile.
        """
        if self.steps:
            return
        # Not inlined (public tf.function argument, TF's own attribute): the step stays one
        # call op, so the program's clock reads before and after it; inlined, its ops were
        # reordered around the clock. tests/test_run_stats.py fails if this stops holding.
        plain = tf.function(one_step, experimental_attributes={"_noinline": True})
        if self.requested is False or _is_tpu(strategy):
            self.steps = {False: plain}  # A TPU compiles every replica step with XLA anyway.
            return
        replicas = strategy.num_replicas_in_sync
        if replicas > 1:
            reason = (
                f"the strategy runs {replicas} replicas in one program, and XLA "
                "on CPU/GPU compiles a step for one device"
            )
        else:
            compiled = tf.function(one_step, jit_compile=True)
            try:
                # Lowering to HLO finds unsupported ops without running anything.
                example = tf.nest.map_structure(
                    lambda s: tf.zeros([d or 1 for d in s.shape], s.dtype), element_spec
                )
                compiled.experimental_get_compiler_ir(example)(stage="hlo")
            except Exception as error:  # noqa: BLE001 - any failure means "no XLA".
                reason = f"XLA cannot compile it ({str(error).splitlines()[0][:300]})"
            else:
                self.steps = {True: compiled}
                if self.requested is not True and self.measure:  # "auto": measured vs plain
                    self.steps[False] = plain
                return
        if self.requested is True:
            raise errors.InvalidArgumentError(
                f"jit_compile=True was asked for the {self.name} step, but {reason}. "
                'Use jit_compile="auto" or False. Received: jit_compile=True'
            )
        warnings.warn(f"tpufit: the {self.name} step runs without XLA: {reason}.", stacklevel=5)
        self.steps = {False: plain}

    def use_xla(self) -> bool:
        """Which step the next loop runs: while measuring, the one measured less."""
        if not self.measuring:
            return bool(self.jit_compile)
        return len(self.timings[True]) <= len(self.timings[False])

    def record(self, use_xla: bool, steps: int, compute_seconds: float) -> None:
        """Takes in a loop's step time; decides once both steps have a timed loop."""
        if not self.measuring or steps < 1:
            return
        self.timings[use_xla].append(compute_seconds / steps)
        if min(len(t) for t in self.timings.values()) >= 2:
            # Each variant's first loop compiled it: compare the loops after.
            xla, plain = (min(self.timings[v][1:]) for v in (True, False))
            self._decided = xla <= plain
