"""`LoggingHook`: the loss, steps/sec and examples/sec, every N seconds or steps."""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm.auto import tqdm

from tpufit import errors
from tpufit.config import Mode
from tpufit.hooks.base import Hook, Run, RunContext, RunValues


class LoggingHook(Hook):
    """Logs the latest loss and metrics with the speed since the last line.

    A line is written after the first loop at least `every_n_secs` seconds
    (or `every_n_steps` steps) after the previous one, e.g.
    `train: global step 1200: loss=0.2311 accuracy=0.9102 (812.4 steps/s, 103987 examples/s)`.

    Args:
        every_n_secs: Seconds between lines (default 10), or `None`.
        every_n_steps: Steps between lines, or `None`.
        log_fn: Where lines go; by default printed with `tqdm.write` (so
            progress bars stay intact).
    """

    def __init__(
        self,
        every_n_secs: float | None = 10.0,
        every_n_steps: int | None = None,
        log_fn: Callable[[str], None] | None = None,
    ) -> None:
        if every_n_steps is not None:
            every_n_secs = None
        if every_n_secs is None and every_n_steps is None:
            raise errors.invalid_argument(
                "every_n_secs", None, "a number of seconds, or every_n_steps", what="LoggingHook"
            )
        self.every_n_secs = every_n_secs
        self.every_n_steps = every_n_steps
        self.log_fn = log_fn or tqdm.write
        self.lines: list[str] = []
        self.modes = (Mode.TRAIN, Mode.EVAL)
        self._since = 0.0
        self._steps = 0

    def after_create_session(self, run: Run) -> None:  # noqa: D102 - see Hook.
        self._since = time.perf_counter()
        self._steps = 0

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        self._steps += ctx.steps
        elapsed = time.perf_counter() - self._since
        if self.every_n_steps is not None:
            due = self._steps >= self.every_n_steps
        else:
            due = elapsed >= self.every_n_secs
        if not due or ctx.mode not in self.modes:
            return
        speed = self._steps / elapsed if elapsed > 0 else float("inf")
        line = self.line(ctx, values, speed)
        self.lines.append(line)
        self.log_fn(line)
        self._since = time.perf_counter()
        self._steps = 0

    def line(self, ctx: RunContext, values: RunValues, steps_per_sec: float) -> str:
        """The line logged after the loop `ctx` describes, at `steps_per_sec` since the last."""
        step = ctx.global_step + ctx.steps if ctx.mode == Mode.TRAIN else ctx.last_step + 1
        entries = " ".join(
            f"{name}={value:.4g}" for name, value in values.logs.items() if isinstance(value, float)
        )
        batch = ctx.run.batch_size
        examples = f", {steps_per_sec * batch:.0f} examples/s" if batch else ""
        label = "global step" if ctx.mode == Mode.TRAIN else "step"
        return f"{ctx.mode}: {label} {step}: {entries} ({steps_per_sec:.1f} steps/s{examples})"
