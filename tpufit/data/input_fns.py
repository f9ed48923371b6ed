"""The adapter of `input_fn(ctx)`: TPUEstimator's way of giving data, one pipeline per worker.

tpufit calls the `input_fn` once per input pipeline through
`strategy.distribute_datasets_from_function`, handing it a `TPUContext`, so
each worker reads only its own shard. The returned dataset goes through the
same padding as any other input: the pipeline cuts it into batches of the rows
its replicas take per step (`per_replica_batch_size` × its replicas), pads the
last one and appends stop batches (evaluation, prediction), then splits each
batch into per-replica batches. The signals of a batch thus count the rows of
the whole step on this pipeline, which is what the padded steps expect.

It is also called once on the host before any device work, to check that it
returns a `tf.data.Dataset` and to learn the element structure.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import cluster, errors
from tpufit.config import Layout, Mode
from tpufit.data import checks, dataset_stream, infeed, weighting
from tpufit.data.context import TPUContext
from tpufit.data.request import InfeedRequest


def is_input_fn(value: Any) -> bool:
    """Whether `value` is an `input_fn`: a plain callable, not a model, layer or data."""
    if not callable(value) or isinstance(
        value, (keras.Model, keras.layers.Layer, tf.data.Dataset, keras.utils.PyDataset)
    ):
        return False
    return not isinstance(value, (np.ndarray, type)) and not hasattr(value, "shape")


def call_input_fn(input_fn: Callable, ctx: TPUContext) -> tf.data.Dataset:
    """Calls `input_fn` as TPUEstimator users write it, and checks it returns a dataset.

    `input_fn(ctx)` gets the `TPUContext`; TPUEstimator's `input_fn(params)`
    gets `{"batch_size": per_replica_batch_size, "context": ctx}`; an
    `input_fn()` gets nothing.

    Raises:
        InvalidTypeError: The result is not a `tf.data.Dataset`.
    """
    try:
        parameters = list(inspect.signature(input_fn).parameters.values())
    except (TypeError, ValueError):
        parameters = [None]
    required = [p for p in parameters if p is None or p.default is inspect.Parameter.empty]
    if not parameters:
        dataset = input_fn()
    elif parameters[0] is not None and parameters[0].name == "params":
        dataset = input_fn({"batch_size": ctx.per_replica_batch_size, "context": ctx})
    elif len(required) > 1:
        raise errors.invalid_argument(
            "input_fn", input_fn, "a function of one argument, the TPUContext: input_fn(ctx)"
        )
    else:
        dataset = input_fn(ctx)
    if not isinstance(dataset, tf.data.Dataset):
        raise errors.InvalidTypeError(
            "`input_fn` must return a tf.data.Dataset (batched by "
            "ctx.per_replica_batch_size). Received: input_fn returned "
            f"{errors._short(dataset)} of type {type(dataset).__name__}"
        )
    return dataset


def _check_element(dataset: tf.data.Dataset) -> None:
    for spec in tf.nest.flatten(dataset.element_spec):
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank == 0:
            raise errors.invalid_argument(
                "input_fn",
                dataset.element_spec,
                "a dataset of batches: dense tensors with a first (batch) dimension",
                what="`input_fn` returned a dataset of unbatched or non-dense elements",
            )


def _pipeline(
    dataset: tf.data.Dataset, ctx: TPUContext, request: InfeedRequest, *, count: bool
) -> tuple[infeed.Infeed, tf.data.Dataset]:
    """Returns `(pipeline's infeed of whole steps, its per-replica batches)`."""
    _check_element(dataset)
    dataset = weighting.with_class_weight(dataset, request.class_weight)
    if request.layout is Layout.TRUE_SIZE:
        # A model's own step sees the batches as the input_fn made them, one per replica.
        dataset = _in_whole_steps(dataset, ctx.replicas_per_pipeline)
        feed = dataset_stream.from_dataset(
            dataset, mode=request.mode, layout=request.layout, count=count
        )
        if feed.steps_per_pass is not None:
            steps = -(-feed.steps_per_pass // ctx.replicas_per_pipeline)
            feed = dataclasses.replace(feed, steps_per_pass=steps)
        return feed, feed.dataset
    step_rows = ctx.per_replica_batch_size * ctx.replicas_per_pipeline
    feed = dataset_stream.from_dataset(
        dataset, mode=request.mode, layout=request.layout, batch_size=step_rows, count=count
    )
    return feed, feed.dataset.rebatch(ctx.per_replica_batch_size, drop_remainder=True)


def _in_whole_steps(dataset: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    """`dataset` (one pass) ending with empty batches up to a whole number of steps.

    Each replica takes the next batch of the pipeline, so a pass whose batch
    count is not a multiple of the replicas would end in a step holding the
    next pass's first batches (or, in evaluation, stop batches, ending the
    loop before the pass's last batch). A replica's empty batch adds nothing
    to a step (`keras_steps.split_exactly`). Counting the batches may read an
    input_fn's dataset once; an endless one is left as it is.
    """
    if replicas == 1:
        return dataset
    count = dataset_stream.count_batches(dataset)
    if count is None or count % replicas == 0:
        return dataset

    def empty(spec: tf.TensorSpec) -> tf.Tensor:
        return tf.zeros([0] + [d or 0 for d in spec.shape.as_list()[1:]], spec.dtype)

    empties = tf.data.Dataset.from_tensors(tf.nest.map_structure(empty, dataset.element_spec))
    return dataset.concatenate(empties.repeat(-count % replicas))


def input_fn_as_x(x: Any, input_fn: Any) -> Any:
    """TPUEstimator's `input_fn=` keyword means the same as passing the `input_fn` as `x`."""
    if input_fn is None:
        return x
    if x is not None:
        raise errors.invalid_argument("input_fn", input_fn, "either x or input_fn, not both")
    return input_fn


def build(
    x: Callable,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> infeed.Infeed:
    """Builds the infeed of an `input_fn`, checking it on this worker's pipeline first.

    Args:
        x: `input_fn(ctx)` returning a batched `tf.data.Dataset`.
        y: Must be `None` (the datasets yield the targets).
        sample_weight: Must be `None`.
        request: What the run asks; `batch_size` is the global batch (32 by default).
        strategy: The strategy whose `distribute_datasets_from_function` calls it.

    Returns:
        An `Infeed` whose `dataset_fn` builds each pipeline; its `dataset` is
        this worker's pipeline in whole steps (used to build the model's state).
    """
    mode, steps = request.mode, request.steps
    checks.check_no_extras("input_fn", y, sample_weight)
    num_replicas = strategy.num_replicas_in_sync
    batch_size = infeed.DEFAULT_BATCH_SIZE if request.batch_size is None else request.batch_size
    checks.check_batch_size(batch_size, num_replicas)
    pipelines = cluster.worker_count(strategy)
    if pipelines > 1 and steps is None and mode == Mode.TRAIN:
        raise errors.invalid_argument(
            "steps_per_epoch",
            None,
            "a positive int: with an input_fn each of the "
            f"{pipelines} workers reads its own shard, so no worker knows the epoch's length",
        )
    if pipelines > 1 and steps is None:
        raise errors.invalid_argument(
            "steps",
            None,
            f"a positive int: with an input_fn each of the {pipelines} "
            "workers reads its own shard, and every worker must run the same steps",
        )

    def context(input_context: tf.distribute.InputContext) -> TPUContext:
        return TPUContext.from_input_context(input_context, mode=mode, global_batch_size=batch_size)

    local = context(
        tf.distribute.InputContext(pipelines, cluster.worker_index(strategy), num_replicas)
    )
    dataset = call_input_fn(x, local)
    if mode != Mode.TRAIN:
        checks.check_steps(steps, dataset)
    local_feed, _ = _pipeline(dataset, local, request, count=steps is None)

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        ctx = context(input_context)
        _, per_replica = _pipeline(call_input_fn(x, ctx), ctx, request, count=False)
        return per_replica

    return infeed.Infeed(
        local_feed.dataset,
        batch_size,
        local_feed.steps_per_pass,
        mode,
        request.layout,
        dataset_fn=dataset_fn,
    )
