"""`fit`'s validation data: `validation_data` unpacked, `validation_split` held out of arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tpufit import errors
from tpufit.data import checks, kinds, tables


def unpack_validation_data(validation_data: Any, batch_size: int | None) -> tuple:
    """Returns `(x, y, sample_weight, batch_size)` from `fit`'s `validation_data`.

    A dataset, generator, `PyDataset` or `input_fn` keeps its own batches;
    arrays and DataFrames take `batch_size`.
    """
    if kinds.kind_of(validation_data) != kinds.ARRAYS:
        return validation_data, None, None, None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise errors.invalid_argument(
            "validation_data",
            validation_data,
            "a tuple (x_val, y_val) or (x_val, y_val, sample_weight_val), a tf.data.Dataset, "
            "a generator, a PyDataset or an input_fn",
        )
    x, y, *rest = validation_data
    return x, y, (rest[0] if rest else None), batch_size


def split_for_validation(x, y, sample_weight, split: float, validation_data):
    """Splits off the last `split` fraction of arrays or DataFrames to validate on, as Keras does.

    Returns:
        `(x, y, sample_weight, validation_data)`: the training part and the held-out part.
    """
    if validation_data is not None or kinds.kind_of(x) != kinds.ARRAYS:
        raise errors.invalid_argument(
            "validation_split",
            split,
            "0.0 when validation_data is given or x is not arrays or DataFrames "
            "(a dataset, generator, PyDataset or input_fn cannot be split)",
        )
    if not 0.0 < split < 1.0:
        raise errors.invalid_argument("validation_split", split, "a float in (0, 1)")
    x, y, sample_weight = (
        tables.to_arrays(v, n) for v, n in ((x, "x"), (y, "y"), (sample_weight, "sample_weight"))
    )
    rows = checks.check_arrays(x=x, y=y, sample_weight=sample_weight)
    cut = int(rows * (1.0 - split))

    def part(v, rows: slice):
        # A None inside `x` (an optional input left out) stays None in both parts, as in Keras.
        return tf.nest.map_structure(lambda a: None if a is None else np.asarray(a)[rows], v)

    def head(v):
        return None if v is None else part(v, slice(None, cut))

    def tail(v):
        return None if v is None else part(v, slice(cut, None))

    return head(x), head(y), head(sample_weight), (tail(x), tail(y), tail(sample_weight))
