"""The adapter of a dataset already distributed by a strategy: its per-replica batches as they are.

`strategy.experimental_distribute_dataset(ds)` and
`strategy.distribute_datasets_from_function(fn)` hand each replica its own
batch per step. On one worker, tpufit reads those batches on the host, in
replica order, and feeds them as an `input_fn`'s pipeline of per-replica
batches (through `input_fns.build`): replica `k` of the run gets the batch
replica `k` got, and a short last step is padded (with a mask) as any input's.
The run's strategy must have as many replicas as the dataset's.

On several workers each worker holds only its own replicas' batches, and
the workers' batches cannot be matched up: that is an error naming what works
(an `input_fn`, or the undistributed dataset).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from tpufit import cluster, errors
from tpufit.config import Layout, Mode
from tpufit.data import checks, infeed, input_fns, weighting
from tpufit.data.request import InfeedRequest

_WHAT = "`x` is a dataset already distributed by a strategy"


def build(
    x: tf.distribute.DistributedDataset,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> infeed.Infeed:
    """Builds the infeed of a distributed dataset, its per-replica batches kept.

    Args:
        x: The distributed dataset (of `x`, `(x, y)` or `(x, y, sample_weight)` batches).
        y: Must be `None` (the dataset yields the targets).
        sample_weight: Must be `None`.
        request: What the run asks; `batch_size` must be `None` (the dataset
            has its own).
        strategy: The run's strategy: one worker, as many replicas as the dataset's.

    Returns:
        The `Infeed`.

    Raises:
        InvalidArgumentError: Several workers, a `batch_size`, or a replica
            count other than the dataset's, before any device work.
    """
    checks.check_no_extras("distributed dataset", y, sample_weight)
    received = f"a {type(x).__name__}"
    if cluster.worker_count(strategy) > 1:
        raise errors.invalid_argument(
            "x",
            f"{received} on {cluster.worker_count(strategy)} workers",
            "an `input_fn(ctx)` returning each worker's dataset (tpufit passes it to "
            "`distribute_datasets_from_function`), or the undistributed tf.data.Dataset",
            what=f"{_WHAT}, whose per-replica batches each worker holds only in part",
        )
    if request.batch_size is not None:
        raise errors.invalid_argument(
            "batch_size",
            request.batch_size,
            "None: a distributed dataset's batches are used as they are",
        )
    replicas = strategy.num_replicas_in_sync
    element = next(iter(x))
    first = _replica_batches(element, strategy)
    several = isinstance(tf.nest.flatten(element)[0], tf.distribute.DistributedValues)
    if len(first) != replicas or (replicas == 1 and several):
        given = "several" if replicas == 1 else len(first)
        raise errors.invalid_argument(
            "x",
            f"{received} of {given} replicas for a strategy of {replicas}",
            "a dataset distributed by the strategy the model runs under",
            what=f"{_WHAT} for another number of replicas",
        )
    spec = tf.nest.map_structure(_any_rows, first[0])
    global_batch = replicas * int(tf.nest.flatten(first[0])[0].shape[0])
    if request.layout is Layout.TRUE_SIZE:
        return _at_true_size(x, spec, request, strategy, global_batch)
    per_replica = tf.data.Dataset.from_generator(
        lambda: (batch for element in x for batch in _replica_batches(element, strategy)),
        output_signature=spec,
    )
    request = dataclasses.replace(request, batch_size=global_batch)
    return input_fns.build(lambda ctx: per_replica, None, None, request, strategy)


def _at_true_size(
    x: tf.distribute.DistributedDataset,
    spec: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
    global_batch: int,
) -> infeed.Infeed:
    """The infeed of each replica's batch at its own size, its signals counting the whole step.

    tpufit's true-size steps weight each replica's loss by its share of the
    step's rows, so every replica's signals carry the step's row count.
    """

    def batches():
        for element in x:
            step = _replica_batches(element, strategy)
            total = sum(_rows(batch) for batch in step)
            yield from ((batch, total) for batch in step)

    read = tf.data.Dataset.from_generator(
        batches, output_signature=(spec, tf.TensorSpec([], tf.int32))
    )
    data = weighting.with_class_weight(read.map(lambda batch, total: batch), request.class_weight)
    totals = read.map(lambda batch, total: total)
    stream = tf.data.Dataset.zip(data, totals) if request.class_weight else read
    stream = stream.map(_with_signals)
    steps = _steps_of(x)
    if request.mode == Mode.TRAIN:
        stream = stream.repeat()
    else:
        per_replica = global_batch // strategy.num_replicas_in_sync
        stream = stream.concatenate(infeed.stop_batches(stream.element_spec[0], per_replica))
    return infeed.Infeed(
        stream,
        global_batch,
        steps,
        request.mode,
        request.layout,
        dataset_fn=lambda context: stream,
    )


def _with_signals(batch: Any, total: tf.Tensor):
    rows = tf.shape(tf.nest.flatten(batch)[0])[0]
    signals = {
        "mask": tf.ones([rows], tf.float32),
        "real_rows": tf.fill([rows], tf.cast(total, tf.float32)),
        "stop": tf.zeros([rows], tf.bool),
    }
    return batch, signals


def _steps_of(x: tf.distribute.DistributedDataset) -> int | None:
    """The steps of one pass over `x`: its cardinality, else counted; `None` if endless."""
    cardinality = int(x.cardinality) if hasattr(x, "cardinality") else -2
    if cardinality == tf.data.INFINITE_CARDINALITY:
        return None
    if cardinality >= 0:
        return cardinality
    return sum(1 for _ in x)


def _rows(batch: Any) -> int:
    return int(tf.shape(tf.nest.flatten(batch)[0])[0])


def _replica_batches(element: Any, strategy: tf.distribute.Strategy) -> list:
    """One step's batches of a distributed dataset, in replica order, as host tensors."""
    parts = [strategy.experimental_local_results(leaf) for leaf in tf.nest.flatten(element)]
    return [
        tf.nest.pack_sequence_as(element, [tf.identity(p[k]) for p in parts])
        for k in range(len(parts[0]))
    ]


def _any_rows(tensor: tf.Tensor) -> tf.TensorSpec:
    return tf.TensorSpec([None] + tensor.shape.as_list()[1:], tensor.dtype)
