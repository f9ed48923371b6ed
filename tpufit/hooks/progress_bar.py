"""Progress of a run with tqdm: a bar per epoch, advanced by each loop's steps.

`verbose` has Keras's meanings: 0 shows nothing, 1 (and "auto") a bar per
epoch (per run in `evaluate` / `predict`), 2 one line per epoch. `tqdm.auto`
gives a widget in a notebook and a text bar in a terminal. Under a multi-worker
strategy only the chief shows progress.

In a notebook a `fit` keeps its output bounded and in place: one widget bar,
reset at each epoch, and one text output holding the latest epochs' one-line
summaries, updated in place (a widget per epoch made 300 epochs a 1.3 MB
notebook). A run that an exception ends never leaves its bar looking complete:
the bar is redrawn without its percentage, titled "failed" or "interrupted".
"""

from __future__ import annotations

import collections
import sys
import time
from typing import Any

from tqdm.auto import tqdm

from tpufit import cluster
from tpufit.config import Mode
from tpufit.hooks.base import Hook, Run, RunContext, RunValues

_TITLES = {Mode.EVAL: "Evaluate", Mode.PREDICT: "Predict"}

# Epoch summaries a notebook shows at once; the History that `fit` returns has them all.
LOG_LINES = 20

# A bar that an exception ended: no percentage, no filled bar, so it cannot read as done
# (tqdm ends `desc` with ": ").
_FAILED_FORMAT = "{desc}{n_fmt}/{total_fmt} steps [{elapsed}{postfix}]"


def in_notebook() -> bool:
    """Whether `tqdm.auto` chose notebook widgets (a Jupyter kernel with ipywidgets)."""
    notebook = sys.modules.get("tqdm.notebook")
    return notebook is not None and issubclass(tqdm, notebook.tqdm_notebook)


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


class EpochLog:
    """The latest epochs' one-line summaries, in one notebook output updated in place.

    Args:
        keep: How many of the latest lines it shows.
    """

    def __init__(self, keep: int = LOG_LINES) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._count = 0
        self._handle: Any = None

    def add(self, line: str) -> None:
        """Appends `line`, dropping the oldest shown beyond `keep`, and redraws the output."""
        from IPython.display import display  # Present wherever a notebook runs tpufit.

        self._lines.append(line)
        self._count += 1
        hidden = self._count - len(self._lines)
        header = [f"... {hidden} earlier epochs (all are in the History fit returns)"]
        text = "\n".join((header if hidden else []) + list(self._lines))
        data = {"text/plain": text}
        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)


class ProgressHook(Hook):
    """Shows a run's progress: a tqdm bar per epoch (`verbose=1`) or a line per epoch (2).

    The bar counts steps: it advances by each loop's step count, so it ends
    at the true number of steps; its postfix shows the latest loss and
    metrics, and examples per second. In a notebook, a `fit` reuses one bar
    for all its epochs and shows the latest epochs' lines below it.

    Args:
        verbose: 0, 1, 2 or "auto" (1), as in Keras.
    """

    def __init__(self, verbose: int | str = "auto") -> None:
        self.verbose = verbosity(verbose)
        self._bar: Any = None
        self._log: EpochLog | None = None
        self._notebook = False
        self._started = 0.0
        self._steps = 0
        self._shown = True
        self._epoch_title = ""

    def begin(self, run: Run) -> None:  # noqa: D102 - see Hook.
        # One progress display per cluster: the chief's.
        self._shown = self.verbose > 0 and cluster.is_chief(run.strategy)
        self._notebook = in_notebook()
        self._log = EpochLog() if self._notebook and run.mode == Mode.TRAIN else None

    def epoch_begin(self, run: Run, epoch: int) -> None:  # noqa: D102
        self._started = time.perf_counter()
        self._steps = 0
        self._epoch_title = self._title(run, epoch)
        if not (self._shown and self.verbose == 1):
            return
        if self._bar is None:
            self._bar = tqdm(
                total=run.steps_per_epoch,
                desc=self._epoch_title,
                unit="step",
                dynamic_ncols=True,
                leave=True,
            )
        else:  # A notebook's fit: the same widget, from zero.
            self._bar.set_description(self._epoch_title, refresh=False)
            self._bar.set_postfix({}, refresh=False)
            self._bar.reset(total=run.steps_per_epoch)

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        self._steps += ctx.steps
        if self._bar is not None:
            self._bar.update(ctx.steps)
            self._bar.set_postfix(self._postfix(ctx.run, values.logs), refresh=False)

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:  # noqa: D102
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(run, logs), refresh=False)
            if self._notebook:
                self._bar.refresh()
            else:
                self._close()
        if not self._shown or (self.verbose == 1 and self._log is None):
            return
        seconds = time.perf_counter() - self._started
        entries = " - ".join(f"{k}: {v}" for k, v in format_logs(logs).items())
        line = f"{self._epoch_title} - {self._steps} steps - {seconds:.1f}s"
        line += f" - {entries}" if entries else ""
        if self._log is not None:
            self._log.add(line)
        else:
            tqdm.write(line)

    def end(self, run: Run) -> None:  # noqa: D102
        if self._bar is not None and run.error is not None:
            self._show_failed(run.error)
        self._close()

    def _show_failed(self, error: BaseException) -> None:
        interrupted = isinstance(error, KeyboardInterrupt)
        what = "interrupted" if interrupted else f"failed: {type(error).__name__}"
        title = f"{self._epoch_title} ({what})"
        self._bar.set_description(title, refresh=False)
        self._bar.bar_format = _FAILED_FORMAT
        if self._notebook:
            # tqdm's widget turns green when closed at its total; red first keeps it red.
            self._bar.display(bar_style="danger", check_delay=False)

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
