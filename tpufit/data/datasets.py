"""The adapter of a user's batched `tf.data.Dataset`.

The dataset yields whole batches (`x`, `(x, y)` or `(x, y, sample_weight)`)
and keeps them: its own batch size is the static batch, unless `batch_size`
re-cuts it. `class_weight` adds the weights as a per-batch map.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tpufit.data import checks, infeed, weighting
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
        size = infeed.dataset_batch_size(dataset)
    checks.check_batch_size(size, strategy.num_replicas_in_sync)
    return infeed.from_dataset(
        dataset,
        mode=request.mode,
        layout=request.layout,
        batch_size=size,
        # An explicit size re-cuts the batches, so that only the last is short.
        rebatch=request.batch_size is not None,
    )
