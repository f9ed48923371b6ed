"""Progress of a run with tqdm: one bar per epoch, advanced by each loop's steps.

`verbose` has Keras's meanings: 0 shows nothing, 1 (and "auto") a bar per
epoch (per run in `evaluate` / `predict`), 2 one line per epoch. `tqdm.auto`
gives a widget in a notebook and a text bar in a terminal. Under a multi-worker
strategy only the chief shows progress.
"""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm

from tpufit import cluster
from tpufit.config import Mode
from tpufit.hooks.base import Hook, Run, RunContext, RunValues

_TITLES = {Mode.EVAL: "Evaluate", Mode.PREDICT: "Predict"}


def verbosity(verbose: int | str) -> int:
    """Returns Keras's verbosity level as 0, 1 or 2 ("auto" is 1)."""
    return 1 if verbose == "auto" else int(verbose)


def format_logs(logs: dict[str, Any]) -> dict[str, str]:
    """Formats scalar logs for display, as Keras's progress bar does (4 significant digits)."""
    shown = {}
    for name, value in logs.items():
        if isinstance(value, int | float):
            shown[name] = f"{value:.4g}"
    return shown


class ProgressHook(Hook):
    """Shows a run's progress: a tqdm bar per epoch (`verbose=1`) or a line per epoch (2).

    The bar counts steps: it advances by each loop's step count, so it ends
    at the true number of steps; its postfix shows the latest loss and
    metrics, and examples per second.

    Args:
        verbose: 0, 1, 2 or "auto" (1), as in Keras.
    """

    def __init__(self, verbose: int | str = "auto") -> None:
        self.verbose = verbosity(verbose)
        self._bar: Any = None
        self._started = 0.0
        self._steps = 0
        self._shown = True

    def begin(self, run: Run) -> None:  # noqa: D102 - see Hook.
        # One progress display per cluster: the chief's.
        self._shown = self.verbose > 0 and cluster.is_chief(run.strategy)

    def epoch_begin(self, run: Run, epoch: int) -> None:  # noqa: D102
        self._started = time.perf_counter()
        self._steps = 0
        if self._shown and self.verbose == 1:
            self._bar = tqdm(
                total=run.steps_per_epoch,
                desc=self._title(run, epoch),
                unit="step",
                dynamic_ncols=True,
                leave=True,
            )

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        self._steps += ctx.steps
        if self._bar is not None:
            self._bar.update(ctx.steps)
            self._bar.set_postfix(self._postfix(ctx.run, values.logs), refresh=False)

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:  # noqa: D102
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(run, logs), refresh=False)
            self._close()
        elif self._shown and self.verbose == 2:
            seconds = time.perf_counter() - self._started
            entries = " - ".join(f"{k}: {v}" for k, v in format_logs(logs).items())
            line = f"{self._title(run, epoch)} - {self._steps} steps - {seconds:.1f}s"
            tqdm.write(line + (f" - {entries}" if entries else ""))

    def end(self, run: Run) -> None:  # noqa: D102
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _postfix(self, run: Run, logs: dict[str, Any]) -> dict[str, str]:
        postfix = format_logs(logs)
        seconds = time.perf_counter() - self._started
        if run.batch_size and seconds > 0:
            postfix["examples/s"] = f"{self._steps * run.batch_size / seconds:.0f}"
        return postfix

    @staticmethod
    def _title(run: Run, epoch: int) -> str:
        if run.mode == Mode.TRAIN:
            return f"Epoch {epoch + 1}/{run.epochs}"
        return _TITLES[run.mode]
