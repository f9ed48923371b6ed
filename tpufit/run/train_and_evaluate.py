"""`tpufit.train_and_evaluate`: training to a global step, evaluating every so many steps.

TPUEstimator's `train_and_evaluate` on tpufit's own loops: one `fit(max_steps=...)`
with a hook that, at the first loop boundary after every `eval_every_steps`
steps (or `eval_every_secs` seconds), runs the exact evaluation `evaluate`
runs (`Evaluations`), and once more at the end unless the last loop's
evaluation already saw the final weights.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tpufit import errors
from tpufit.config import Mode
from tpufit.data import kinds
from tpufit.hooks.base import Hook, Run, RunContext, RunValues, first_non_finite
from tpufit.model_dir.exporters import Exporter
from tpufit.run.evaluations import (
    Evaluations,
    check_data_pair,
    check_exporters,
    check_tpu_model,
)

if TYPE_CHECKING:
    from tpufit.model import TPUModel

# fit's arguments that train_and_evaluate sets itself.
_OWN_ARGUMENTS = ("x", "y", "sample_weight", "max_steps", "validation_data", "validation_split",
                  "validation_steps", "validation_freq")  # fmt: skip


def train_and_evaluate(
    tm: TPUModel,
    train_data: Any,
    eval_data: Any,
    *,
    max_steps: int,
    eval_every_steps: int | None = None,
    eval_every_secs: float | None = None,
    eval_steps: int | None = None,
    exporters: tuple[Exporter, ...] | list[Exporter] = (),
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Trains to global step `max_steps`, evaluating exactly every so many steps or seconds.

    Each evaluation runs at the first loop boundary after `eval_every_steps`
    steps (or `eval_every_secs` seconds) since the last, and after the last
    loop; with both `None`, only after the last loop. It equals
    `tm.evaluate(eval_data)` on the weights of that moment, is written to
    `<model_dir>/eval` at its global step, handed to every exporter, and to
    the Keras callbacks as `val_*` entries of the logs of the epoch it falls
    in (the latest, when several do). Training resumes from the `model_dir`
    as `tm.fit(max_steps=max_steps)` does; the training metrics' running
    state survives the evaluations.

    Args:
        tm: A compiled `tpufit.TPUModel`.
        train_data: `fit`'s `x`, or `(x, y)` / `(x, y, sample_weight)` of arrays.
        eval_data: As `fit`'s `validation_data`.
        max_steps: The global step to train to.
        eval_every_steps: Steps between evaluations, or `None`.
        eval_every_secs: Seconds between evaluations, or `None`.
        eval_steps: Steps of each evaluation, or `None` for all of `eval_data`.
        exporters: `tpufit.BestExporter` / `tpufit.LatestExporter`s.
        **fit_kwargs: Passed to `tm.fit` (`batch_size`, `callbacks`, `hooks`,
            `verbose`, ...; `validation_batch_size` is the evaluations' batch size).

    Returns:
        The last evaluation's logs, as `tm.evaluate(..., return_dict=True)`.
    """
    check_tpu_model(tm, "train_and_evaluate")
    errors.check_positive_int("max_steps", max_steps)
    errors.check_positive_int("eval_every_steps", eval_every_steps, allow_none=True)
    errors.check_positive_int("eval_steps", eval_steps, allow_none=True)
    if eval_every_secs is not None and (
        not isinstance(eval_every_secs, (int, float, np.integer, np.floating))
        or isinstance(eval_every_secs, bool)
        or not eval_every_secs > 0
    ):
        raise errors.invalid_argument(
            "eval_every_secs", eval_every_secs, "a positive number or None"
        )
    exporters = check_exporters(exporters)
    for name in _OWN_ARGUMENTS:
        if name in fit_kwargs:
            raise errors.invalid_argument(
                name,
                fit_kwargs[name],
                "it left out: train_and_evaluate sets it from train_data, eval_data, "
                "max_steps and eval_steps",
                what=f"train_and_evaluate does not pass `{name}` on to fit",
            )
    check_data_pair("train_data", train_data)
    check_data_pair("eval_data", eval_data)
    batch_size = fit_kwargs.pop("validation_batch_size", None) or fit_kwargs.get("batch_size")
    evaluations = Evaluations(
        tm,
        eval_data,
        steps=eval_steps,
        batch_size=batch_size,
        exporters=exporters,
        summaries=tm._model_dir.eval_summaries,  # the model's eval event file
        prepare=False,
    )
    hook = _EvaluationHook(evaluations, max_steps, eval_every_steps, eval_every_secs)
    hooks = [*(fit_kwargs.pop("hooks", None) or ()), hook]
    x, y, sample_weight = train_data, None, None
    if kinds.kind_of(train_data) == kinds.ARRAYS:
        x, y, *rest = train_data
        sample_weight = rest[0] if rest else None
    tm.fit(x, y, sample_weight=sample_weight, max_steps=max_steps, hooks=hooks, **fit_kwargs)
    return evaluations.last


class _EvaluationHook(Hook):
    """Evaluates at the loop boundaries `train_and_evaluate`'s cadence makes due, and at the end.

    A loop that makes an evaluation due only marks it: it runs at the
    boundary's next event (the epoch's end, the next loop's start, the run's
    end), once every hook has seen the loop, so the callbacks get
    `on_train_batch_end` before `on_test_begin` and the loop's checkpoint is
    saved first, as in Keras's `fit` with validation.
    """

    def __init__(
        self,
        evaluations: Evaluations,
        max_steps: int,
        every_steps: int | None,
        every_secs: float | None,
    ) -> None:
        self.evaluations = evaluations
        self._max_steps = max_steps
        self._every_steps = every_steps
        self._every_secs = every_secs
        self._last_step = 0
        self._last_time = 0.0
        self._due = False
        self._unreported: dict[str, Any] | None = None  # for the epoch's callbacks

    def begin(self, run: Run) -> None:  # noqa: D102 - see Hook.
        self._last_step = run.global_step
        self._last_time = time.monotonic()

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        if ctx.mode is not Mode.TRAIN or not _finite(values):
            return  # The NaN guard, after this hook, ends the run: such weights are not evaluated.
        step = ctx.run.global_step
        self._due = (
            step >= self._max_steps
            or self._every_steps is not None
            and step - self._last_step >= self._every_steps
            or self._every_secs is not None
            and time.monotonic() - self._last_time >= self._every_secs
        )

    def before_run(self, ctx: RunContext) -> None:  # noqa: D102
        if ctx.mode is Mode.TRAIN and self._due:
            self._evaluate(ctx.run)

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:  # noqa: D102
        if run.mode is not Mode.TRAIN:
            return
        if self._due:
            self._evaluate(run)
        if self._unreported is not None:
            logs.update({f"val_{name}": value for name, value in self._unreported.items()})
            self._unreported = None

    def end(self, run: Run) -> None:  # noqa: D102
        # Also training that ended before max_steps (the data, a callback) or had nothing to do.
        if run.mode is Mode.TRAIN and run.error is None:
            if self.evaluations.last_step != run.global_step:
                self._evaluate(run)

    def _evaluate(self, run: Run) -> None:
        self._due = False
        self._unreported = self.evaluations.evaluate(run.global_step, parent=run)
        self._last_step = run.global_step
        self._last_time = time.monotonic()


def _finite(values: RunValues) -> bool:
    if values.non_finite is not None:
        return False
    return "loss" not in values.outfeed or first_non_finite(values.outfeed["loss"]) is None
