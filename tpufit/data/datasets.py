"""The adapter of a user's batched `tf.data.Dataset`.

The dataset yields whole batches (`x`, `(x, y)` or `(x, y, sample_weight)`)
and keeps them: its own batch size is the static batch, unless `batch_size`
re-cuts it. `class_weight` adds the weights as a per-batch map.

A dataset whose batches may vary in size (its batch dimension is unknown)
is re-cut to its first batch's size for `predict` and a padded `evaluate`:
rows are independent there, so the cut changes no result. Training keeps
the user's batches, each one step as in Keras: on one replica at their own
sizes, under several padded to the first batch's size (a replica's share
must have a static size).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tpufit.data import checks, dataset_stream, infeed, weighting
from tpufit.data.request import InfeedRequest


def build(
    x: tf.data.Dataset,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> infeed.Infeed:
    """Builds the infeed of a batched `tf.data.Dataset`.

    Args:
        x: The dataset.
        y: Must be `None` (the dataset yields the targets).
        sample_weight: Must be `None`.
        request: What the run asks; `batch_size` re-cuts the batches (by
            default the dataset's own: static, else its first batch's).
        strategy: The strategy the infeed feeds.

    Returns:
        The `Infeed`.
    """
    checks.check_no_extras("tf.data.Dataset", y, sample_weight)
    checks.check_batches(x.element_spec, "tf.data.Dataset")
    dataset = weighting.with_class_weight(x, request.class_weight)
    size = request.batch_size
    if size is None:
        size = dataset_stream.dataset_batch_size(dataset)
    checks.check_batch_size(size, strategy.num_replicas_in_sync)
    return dataset_stream.from_dataset(
        dataset,
        mode=request.mode,
        layout=request.layout,
        batch_size=size,
        rebatch=request.batch_size is not None or _recut_freely(dataset, request),
        keep_sizes=request.endless
        and request.batch_size is None
        and _unknown_batch_size(dataset)
        and strategy.num_replicas_in_sync == 1,
    )


def _unknown_batch_size(dataset: tf.data.Dataset) -> bool:
    batch_dim = tf.nest.flatten(dataset.element_spec)[0].shape
    return not batch_dim.rank or batch_dim[0] is None


def _recut_freely(dataset: tf.data.Dataset, request: InfeedRequest) -> bool:
    """Whether batches of unknown size may be re-cut to the static size without changing a result.

    Prediction rows are independent, and a padded evaluation weights each
    row on its own; a training step's batch is the user's to choose.
    """
    return _unknown_batch_size(dataset) and request.padded and not request.endless
