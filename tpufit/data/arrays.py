"""The adapter of in-memory arrays: numpy (nested in dicts, lists, tuples) and pandas.

DataFrames and Series become numpy arrays first (`tables.py`); `class_weight`
becomes per-row sample weights on the host (`weighting.py`). The arrays are
packed as Keras packs them and fed by `infeed.from_arrays`: reshuffled every
pass with the run's seed when `shuffle`, `batch_size` 32 by default.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tpufit import errors
from tpufit.data import checks, infeed, resident, tables, weighting
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
