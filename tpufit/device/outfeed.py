"""What a loop program hands the host: each loop's `LoopResult`, and the reducers of its steps.

A program's replica step returns per-replica values; `reduce_logs` (train,
eval) and `gather_predictions` (predict) turn them into one step's outfeed
row and its latest logs, inside the program. On the host, a loop's outfeed
arrives as a `LoopResult`, with one row per step that ran.

A ragged or sparse prediction has no fixed shape from step to step, and an
outfeed row must have one: each step's is written as a `Packed` row (its
components serialized, a string each) and rebuilt on the host by `stack_rows`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tpufit.data import composite

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
            lambda v: composite.concat(strategy.experimental_local_results(v)), outputs
        )
    return tf.nest.map_structure(_packed, gathered), {}


class Packed(NamedTuple):
    """One step's ragged or sparse prediction as an outfeed row of fixed shape.

    Attributes:
        sparse: Whether it is a `tf.SparseTensor` (else a `tf.RaggedTensor`).
        parts: Its components, each serialized to a string: a ragged tensor's
            flat values then its row splits, outermost first; a sparse
            tensor's indices, values and dense shape.
        dtypes: The components' dtypes (`DType.as_datatype_enum`).
    """

    sparse: Any
    parts: Any
    dtypes: Any


def _packed(value):
    if isinstance(value, tf.SparseTensor):
        components = [value.indices, value.values, value.dense_shape]
    elif isinstance(value, tf.RaggedTensor):
        components = [value.flat_values, *value.nested_row_splits]
    else:
        return value
    return Packed(
        tf.constant(isinstance(value, tf.SparseTensor)),
        tf.stack([tf.io.serialize_tensor(c) for c in components]),
        tf.constant([c.dtype.as_datatype_enum for c in components], tf.int32),
    )


def _unpacked(sparse: bool, parts, dtypes):
    components = [
        tf.io.parse_tensor(part, tf.dtypes.as_dtype(int(dtype)))
        for part, dtype in zip(parts, dtypes, strict=True)
    ]
    if sparse:
        return tf.SparseTensor(*components)
    return tf.RaggedTensor.from_nested_row_splits(components[0], components[1:])


def _rows_of_steps(value):
    if isinstance(value, Packed):
        return composite.concat(
            [_unpacked(*step) for step in zip(value.sparse, value.parts, value.dtypes, strict=True)]
        )
    if isinstance(value, np.ndarray):
        return np.reshape(value, (-1,) + value.shape[2:])
    return None  # A structure: its parts are stacked one by one.


def stack_rows(outfeed) -> Any:
    """Merges the step axis into the row axis: `[steps, rows, ...] -> [steps*rows, ...]`.

    A ragged or sparse prediction (`Packed` rows) becomes one `tf.RaggedTensor`
    or `tf.SparseTensor` of every step's rows, as Keras's `predict` returns it.
    """
    return keras.tree.traverse(_rows_of_steps, outfeed)
