"""Argument checks that run before any device work, each raising a `tpufit` error."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tpufit import errors
from tpufit.data import padding
from tpufit.errors import check_positive_int


def check_batch_size(batch_size: Any, num_replicas: int) -> None:
    """Checks that the global `batch_size` is a positive int that splits over the replicas."""
    check_positive_int("batch_size", batch_size)
    if batch_size % num_replicas:
        below, above = padding.nearest_valid_batch_sizes(batch_size, num_replicas)
        nearest = (
            f"the nearest valid size is {above}"
            if below == above
            else f"the nearest valid sizes are {below} and {above}"
        )
        raise errors.invalid_argument(
            "batch_size",
            batch_size,
            f"a multiple of the {num_replicas} replicas, since the global batch "
            f"is split evenly over them; {nearest}",
            what="`batch_size` does not split over the replicas",
        )


def is_dataset(value: Any) -> bool:
    """Whether `value` is a `tf.data.Dataset`."""
    return isinstance(value, tf.data.Dataset)


def _rows(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) == 0:
        return None
    return int(shape[0])


def check_arrays(**parts: Any) -> int:
    """Checks that every array in `parts` (x, y, sample_weight) has the same rows.

    Returns:
        The number of rows.
    """
    lengths: dict[str, int] = {}
    for name, value in parts.items():
        if value is None:
            continue
        for i, leaf in enumerate(tf.nest.flatten(value)):
            leaf = np.asarray(leaf) if not hasattr(leaf, "shape") else leaf
            rows = _rows(leaf)
            label = name if len(tf.nest.flatten(value)) == 1 else f"{name}[{i}]"
            if rows is None:
                raise errors.invalid_argument(
                    name,
                    leaf,
                    "arrays with a first (batch) dimension",
                    what=f"`{label}` is a scalar",
                )
            lengths[label] = rows
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} has {v} rows" for k, v in lengths.items())
        raise errors.InvalidArgumentError(
            f"The data arrays have different lengths: {listed}. Expected the same "
            f"number of rows in x, y and sample_weight. Received: {listed}"
        )
    if not lengths:
        raise errors.invalid_argument(
            "x",
            parts.get("x"),
            "at least one array (numpy, or a list/dict of arrays)",
            what="The data holds no array",
        )
    rows = next(iter(lengths.values()))
    if rows == 0:
        raise errors.invalid_argument(
            "x", "0 rows", "at least one row of data", what="The data is empty"
        )
    return rows


def check_no_extras(source: str, y: Any, sample_weight: Any) -> None:
    """Checks that `y` and `sample_weight` are None: an input yielding batches carries its own.

    Args:
        source: What `x` is, for the message ("tf.data.Dataset", "generator", ...).
        y: The `y` argument.
        sample_weight: The `sample_weight` argument.
    """
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            raise errors.invalid_argument(
                name,
                value,
                f"None when x is a {source} (it yields (x, y) or (x, y, sample_weight) itself)",
            )


def check_steps(steps: Any, x: Any) -> None:
    """Checks `evaluate` / `predict`'s `steps`: a positive int, required for an endless dataset."""
    check_positive_int("steps", steps, allow_none=True)
    if steps is None and is_dataset(x) and int(x.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise errors.invalid_argument(
            "steps",
            steps,
            "a positive int when the dataset repeats forever (or a dataset that ends)",
            what="The dataset is endless",
        )
