"""What a loop program hands the host: each loop's `LoopResult`, and the reducers of its steps.

A program's replica step returns per-replica values; `reduce_logs` (train,
eval) and `gather_predictions` (predict) turn them into one step's outfeed
row and its latest logs, inside the program. On the host, a loop's outfeed
arrives as a `LoopResult`, with one row per step that ran.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

_MEAN = tf.distribute.ReduceOp.MEAN
_SUM = tf.distribute.ReduceOp.SUM


@dataclasses.dataclass(frozen=True)
class NonFiniteStep:
    """The step a guarded training loop ended at: its loss or gradients were not finite.

    Attributes:
        index: The step's index in its loop (the loop's last step).
        withheld: Whether the step's update was withheld (`NanGuard.WITHHOLD`:
            weights and optimizer state are those from before it), rather
            than applied (`NanGuard.HALT`).
    """

    index: int
    withheld: bool


@dataclasses.dataclass
class LoopResult:
    """What one loop hands to the host.

    Attributes:
        outfeed: Nested numpy arrays with one row per step that ran.
        latest: The last step's values of what is kept only as the latest
            (the logs); zeros when no step ran.
        steps: How many steps ran (fewer than asked only at a stop batch).
        stopped: Whether the loop read a stop batch.
        input_seconds: Time the loop's steps spent getting their batches.
        compute_seconds: Time the loop's steps ran.
        traced: Whether this loop traced (and so compiled) the program: its
            time is no measure of its steps.
        non_finite: The step a guarded training loop ended at, its loss or
            gradients not finite, or `None`.
    """

    outfeed: Any
    latest: Any
    steps: int
    stopped: bool
    input_seconds: float = 0.0
    compute_seconds: float = 0.0
    traced: bool = False
    non_finite: NonFiniteStep | None = None

    @property
    def trained(self) -> int:
        """The steps whose updates the model kept: all that ran but a withheld one."""
        return self.steps - int(self.non_finite is not None and self.non_finite.withheld)


def joined(first: LoopResult, rest: LoopResult) -> LoopResult:
    """The result of one loop run as its `first` steps, then the `rest` (which may have none)."""
    if not rest.steps:
        return dataclasses.replace(
            first,
            stopped=rest.stopped,
            input_seconds=first.input_seconds + rest.input_seconds,
        )
    outfeed = tf.nest.map_structure(
        lambda a, b: np.concatenate([a, b]), first.outfeed, rest.outfeed
    )
    non_finite = rest.non_finite
    if non_finite is not None:
        non_finite = dataclasses.replace(non_finite, index=non_finite.index + first.steps)
    return LoopResult(
        outfeed,
        rest.latest,
        first.steps + rest.steps,
        rest.stopped,
        first.input_seconds + rest.input_seconds,
        first.compute_seconds + rest.compute_seconds,
        traced=True,
        non_finite=non_finite,
    )


def reduce_logs(strategy: tf.distribute.Strategy, outputs) -> tuple[dict, dict]:
    """Reduces a train/eval step's replica outputs to `(per_step, latest)`.

    Per step: the loss (the replicas' shares summed), the padding rows and
    whether the step was not finite on some replica (`"non_finite"`, set
    only by a guarded training step), both the same on every replica, and
    the hooks' `host_call` values (averaged). Latest: the logs, averaged over
    replicas as Keras does; the host reads exact values from the metrics at
    the end.
    """
    logs, step_loss, padding_rows, extras, non_finite = outputs
    per_step = {
        "loss": strategy.reduce(_SUM, step_loss, axis=None),
        "padding_rows": strategy.reduce(_MEAN, padding_rows, axis=None),
        "non_finite": strategy.experimental_local_results(non_finite)[0],
        **{name: strategy.reduce(_MEAN, value, axis=None) for name, value in extras.items()},
    }
    return per_step, tf.nest.map_structure(lambda v: strategy.reduce(_MEAN, v, axis=None), logs)


def gather_predictions(strategy: tf.distribute.Strategy, outputs) -> tuple[Any, dict]:
    """Concatenates a predict step's per-replica outputs and masks in replica order.

    Returns `(per_step, latest)` with everything per step and no latest.

    On one machine the replicas' local results are simply concatenated:
    `strategy.gather` is a collective, and a collective inside the stop
    signal's `cond` fails under `MirroredStrategy` like keras-team/keras#19246.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        gathered = tf.nest.map_structure(lambda v: strategy.gather(v, axis=0), outputs)
    else:
        gathered = tf.nest.map_structure(
            lambda v: tf.concat(strategy.experimental_local_results(v), axis=0), outputs
        )
    return gathered, {}


def stack_rows(outfeed) -> Any:
    """Merges the step axis into the row axis: `[steps, rows, ...] -> [steps*rows, ...]`."""
    return tf.nest.map_structure(lambda a: np.reshape(a, (-1,) + a.shape[2:]), outfeed)
