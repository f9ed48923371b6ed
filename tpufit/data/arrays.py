"""The adapter of in-memory arrays: numpy (nested in dicts, lists, tuples) and pandas.

DataFrames and Series become numpy arrays first (`tables.py`); `class_weight`
becomes per-row sample weights on the host (`weighting.py`). The arrays are
packed as Keras packs them and fed by `infeed.from_arrays`: reshuffled every
pass with the run's seed when `shuffle`, `batch_size` 32 by default.

Data with a ragged or sparse part (a `tf.RaggedTensor`, `tf.SparseTensor` or
scipy sparse matrix, which Keras takes as arrays) is sliced into batches by
`tf.data` instead, and fed as a dataset's batches are (`composite.py`).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tpufit import errors
from tpufit.data import (
    checks,
    composite,
    dataset_stream,
    infeed,
    kinds,
    resident,
    tables,
    weighting,
)
from tpufit.data.request import InfeedRequest


def build(
    x: Any,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> infeed.Infeed:
    """Builds the infeed of arrays or DataFrames.

    Args:
        x: Inputs: an array, a DataFrame, or a dict / list / tuple of them.
        y: Targets, or `None`.
        sample_weight: Per-row weights, or `None`.
        request: What the run asks of its input.
        strategy: The strategy the infeed feeds.

    Returns:
        The `Infeed`.

    Raises:
        InvalidArgumentError: Anything `checks.py`, `tables.py` or
            `weighting.py` rejects; nothing has touched a device yet.
    """
    x, y, sample_weight = (
        tables.to_arrays(v, n) for v, n in ((x, "x"), (y, "y"), (sample_weight, "sample_weight"))
    )
    weighting.check_combination(y, sample_weight, request.class_weight)
    if x is None:
        raise errors.invalid_argument("x", x, "arrays, a dict/list of arrays or a tf.data.Dataset")
    if composite.any_composite((x, y, sample_weight)):
        return _with_composite(x, y, sample_weight, request, strategy)
    checks.check_arrays(x=x, y=y, sample_weight=sample_weight)
    if request.expected is not None and request.expected.targets is not None:
        request.expected.targets.check_labels(y)
    if request.class_weight is not None:
        sample_weight = weighting.sample_weights_for(y, request.class_weight)
    size = infeed.DEFAULT_BATCH_SIZE if request.batch_size is None else request.batch_size
    checks.check_batch_size(size, strategy.num_replicas_in_sync)
    packed = infeed.pack_arrays(x, y, sample_weight)
    feed = infeed.from_arrays(
        packed,
        size,
        mode=request.mode,
        layout=request.layout,
        shuffle_seed=request.shuffle_seed,
        drop_remainder=request.drop_remainder,
    )
    return resident.offer(
        feed,
        packed,
        mode=request.mode,
        layout=request.layout,
        seed=request.shuffle_seed,
        drop_remainder=request.drop_remainder,
    )


def _with_composite(
    x: Any, y: Any, sample_weight: Any, request: InfeedRequest, strategy: tf.distribute.Strategy
) -> infeed.Infeed:
    """The infeed of arrays with a ragged or sparse part: batches cut by `tf.data`."""
    data = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
    data = tf.nest.map_structure(
        lambda leaf: (
            composite.as_tensor(leaf)
            if composite.is_composite(leaf)
            else infeed.as_input_array(leaf)
        ),
        infeed.as_tuples(data),
    )
    _check_rows(data)
    if request.class_weight is not None:
        if composite.any_composite(y):
            raise errors.invalid_argument(
                "class_weight",
                request.class_weight,
                "None when y is ragged or sparse (weigh the rows with sample_weight)",
            )
        data = (*data[:2], weighting.sample_weights_for(y, request.class_weight))
    size = infeed.DEFAULT_BATCH_SIZE if request.batch_size is None else request.batch_size
    checks.check_batch_size(size, strategy.num_replicas_in_sync)
    dataset = tf.data.Dataset.from_tensor_slices(data)
    if request.shuffle_seed is not None:
        rows = int(dataset.cardinality())
        dataset = dataset.shuffle(rows, seed=request.shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(size, drop_remainder=request.drop_remainder)
    return dataset_stream.from_dataset(
        dataset, mode=request.mode, layout=request.layout, batch_size=size, rebatch=False
    )


def _check_rows(data: Any) -> None:
    # Packed as Keras packs arrays: `x` alone is bare unless it holds several inputs.
    parts = data if isinstance(data, tuple) else (data,)
    rows = {}
    for name, part in zip(("x", "y", "sample_weight"), parts, strict=False):
        for label, leaf in checks.labelled_leaves(part, name):
            if leaf is None:
                raise errors.invalid_argument(
                    name,
                    None,
                    "an array in every part of data with a ragged or sparse part",
                    what=f"`{label}` is None",
                )
            rows[label] = composite.num_rows(leaf) if composite.is_composite(leaf) else len(leaf)
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{k} has {v} rows" for k, v in rows.items())
        raise errors.InvalidArgumentError(
            f"The data arrays have different lengths: {listed}. Expected the same "
            f"number of rows in x, y and sample_weight. Received: {listed}"
        )


def batch_size_for_steps(x: Any, batch_size: int | None, steps: int | None) -> int | None:
    """Returns the batch size of a run: for arrays given `steps` but no size, as Keras's adapter.

    Keras then cuts the rows into `steps` batches: `ceil(rows / steps)` rows each.
    """
    if batch_size is not None or steps is None or x is None:
        return batch_size
    if kinds.kind_of(x) != kinds.ARRAYS:
        return batch_size
    first = tf.nest.flatten(x)[0]
    return -(-len(first) // steps)
