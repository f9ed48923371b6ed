"""Repeated exact evaluations of one data set, each one reported (summaries, exporters).

`tpufit.train_and_evaluate` evaluates between training loops and
`tpufit.evaluate_checkpoints` after restoring each new checkpoint; both build
the evaluation data's infeed once (as `fit` does for its validation data), run
the same exact evaluation `TPUModel.evaluate` runs (`Engine.evaluation`), and
hand every result to the `model_dir`'s eval summaries and to the exporters.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import keras

from tpufit import errors
from tpufit.data import kinds
from tpufit.hooks.base import HookList, Run
from tpufit.model_dir.exporters import Exporter
from tpufit.model_dir.summaries import EvalSummaryWriter
from tpufit.run import failures

if TYPE_CHECKING:
    from tpufit.model import TPUModel


def check_tpu_model(tm: Any, function: str) -> None:
    """Checks that `tm` is a compiled `tpufit.TPUModel`."""
    from tpufit.model import TPUModel  # The front door, above this stage: for the check only.

    if not isinstance(tm, TPUModel):
        raise errors.invalid_type(
            "tm", tm, f"a compiled tpufit.TPUModel (wrap a Keras model to use {function})"
        )
    tm._check_compiled(function)


def check_exporters(exporters: Any) -> tuple[Exporter, ...]:
    """Returns `exporters` as a tuple, checking that each is a `tpufit` exporter."""
    if isinstance(exporters, Exporter):
        exporters = (exporters,)
    if not isinstance(exporters, Sequence) or not all(isinstance(e, Exporter) for e in exporters):
        raise errors.invalid_type(
            "exporters", exporters, "a list of tpufit.BestExporter / tpufit.LatestExporter"
        )
    return tuple(exporters)


def check_data_pair(name: str, value: Any) -> None:
    """Checks that arrays come as `(x, y)` or `(x, y, sample_weight)`, as `validation_data`."""
    if kinds.kind_of(value) == kinds.ARRAYS and (
        not isinstance(value, (tuple, list)) or len(value) not in (2, 3)
    ):
        raise errors.invalid_argument(
            name,
            value,
            "a tuple (x, y) or (x, y, sample_weight), a tf.data.Dataset, a generator, "
            "a PyDataset or an input_fn",
        )


class Evaluations:
    """Evaluates one `TPUModel` on one data set whenever asked, on the weights it holds then.

    Args:
        tm: The compiled `tpufit.TPUModel`.
        eval_data: As `fit`'s `validation_data`: `(x, y)`, `(x, y, sample_weight)`,
            a dataset, generator, `PyDataset` or `input_fn`.
        steps: Steps of each evaluation, or `None` for the whole data.
        batch_size: The batch size of arrays.
        exporters: Handed every evaluation.
        summaries: The writer of `<model_dir>/eval` that gets every
            evaluation, or `None`.
        prepare: Whether to build the model's state now (outside a `fit`).
    """

    def __init__(
        self,
        tm: TPUModel,
        eval_data: Any,
        *,
        steps: int | None,
        batch_size: int | None,
        exporters: tuple[Exporter, ...],
        summaries: EvalSummaryWriter | None,
        prepare: bool,
    ) -> None:
        self._tm = tm
        # The run stage's own view of the front door: the engine and the model on the replicas.
        self._engine = tm._engine
        self._replicas = tm._replicas
        self._steps = steps
        self._exporters = exporters
        self._summaries = summaries
        self.feed = self._engine.evaluation_feed(eval_data, batch_size, steps, prepare=prepare)
        self.last: dict[str, Any] | None = None
        self.last_step: int | None = None

    def evaluate(self, global_step: int, parent: Run | None = None) -> dict[str, Any]:
        """Evaluates exactly, writes the eval summaries, calls the exporters; returns the logs.

        Inside a `fit` (`parent`), the training metrics' running state is
        kept (the epoch's training logs stay those of all its steps), and the
        fit's Keras callbacks get the evaluation's `on_test_*` events, as in
        `fit`'s validation.
        """
        strategy = self._tm.strategy
        keeping = _metric_state_kept(self._replicas.replica_model) if parent else None
        callbacks = parent.callback_hook if parent is not None else None
        hooks = HookList([callbacks] if callbacks is not None else [])
        with keeping or contextlib.nullcontext():
            with failures.translating(strategy, "evaluate", [self.feed]):
                logs = self._engine.evaluation(self.feed, self._steps, hooks, parent)
        scalars = {n: v for n, v in logs.items() if isinstance(v, numbers.Real)}
        if self._summaries is not None:
            self._summaries.write(global_step, scalars)
        if self._exporters:
            # Exports are of the user's model, which a clone's fit updates only at its end.
            with self._replicas.user_weights():
                for exporter in self._exporters:
                    exporter.export(self._tm, global_step, logs)
        self.last, self.last_step = logs, global_step
        return logs


@contextlib.contextmanager
def _metric_state_kept(model: keras.Model) -> Iterator[None]:
    # Keras's compiled metrics serve training and evaluation alike, and an evaluation resets
    # them: between two loops of an epoch, that would cut the epoch's running training logs.
    saved = [(variable, variable.numpy()) for variable in model.metrics_variables]
    try:
        yield
    finally:
        with model.distribute_strategy.scope():
            for variable, value in saved:
                variable.assign(value)
