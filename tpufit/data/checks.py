"""Argument checks that run before any device work, each raising a `tpufit` error."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import errors
from tpufit.data import composite, padding
from tpufit.errors import check_positive_int

_ALL_TEXT = object()  # What a search for a non-string finds in an array of strings.


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


def labelled_leaves(value: Any, name: str) -> list[tuple[str, Any]]:
    """Returns the leaves of a nested structure in `tf.nest` order, each labelled by its path.

    Example:
        >>> [label for label, _ in labelled_leaves({"b": [1, 2], "a": 3}, "x")]
        ["x['a']", "x['b'][0]", "x['b'][1]"]
    """
    if isinstance(value, dict):
        return [
            leaf
            for key in sorted(value)
            for leaf in labelled_leaves(value[key], f"{name}[{key!r}]")
        ]
    if isinstance(value, (list, tuple)):
        return [
            leaf for i, item in enumerate(value) for leaf in labelled_leaves(item, f"{name}[{i}]")
        ]
    return [(name, value)]


def _rows(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) == 0:
        return None
    return int(shape[0])


def check_values(name: str, label: str, array: np.ndarray) -> None:
    """Checks that an array holds numbers or strings, the values a tensor can hold.

    Args:
        name: The argument the array is part of ("x", "y", "sample_weight").
        label: The array's path in it ("x['age']"), for the message.
        array: The array.
    """
    if array.dtype.kind in "biufcUS":
        return
    if array.dtype.kind == "O":
        odd = next((v for v in array.flat if not isinstance(v, (str, bytes))), _ALL_TEXT)
        if odd is _ALL_TEXT:
            return  # Strings as Python objects (pandas' text columns): a tf.string tensor.
        what = f"holds {type(odd).__name__} objects, e.g. {errors._short(odd)}"
    else:
        what = f"holds {array.dtype} values"
    raise errors.invalid_argument(
        name,
        f"an array of dtype {array.dtype}",
        "an array of numbers, or of strings for a string input; ragged rows need "
        "padding first (e.g. `keras.utils.pad_sequences`) or a tf.data.Dataset",
        what=f"`{label}` {what}",
    )


_DENSE_FIRST = (
    "dense arrays: `validation_split` holds out rows of dense data only; pass ragged or "
    "sparse data's validation rows as validation_data=(x_val, y_val) instead"
)


def not_dense(value: Any) -> str | None:
    """What kind of ragged or sparse data `value` is ("a tf.RaggedTensor", ...), or `None`."""
    if isinstance(value, tf.RaggedTensor):
        return "a tf.RaggedTensor"
    if isinstance(value, tf.SparseTensor):
        return "a tf.SparseTensor"
    if (type(value).__module__ or "").startswith("scipy.sparse"):
        return f"a scipy sparse {type(value).__name__}"
    return None


def refuse_not_dense(name: str, label: str, value: Any, where: str = "") -> None:
    """Raises for ragged or sparse data (see `not_dense`), before any device work.

    Args:
        name: The argument the value is part of ("x", "y", "sample_weight").
        label: The value's path in it ("x['age']"), for the message.
        value: The value.
        where: Where the value came from, for the message (" in batch 0 of the generator").
    """
    kind = not_dense(value)
    if kind is not None:
        raise errors.invalid_argument(
            name,
            f"{kind} of shape {tuple(value.shape)}",
            _DENSE_FIRST,
            what=f"`{label}`{where} is {kind}",
        )


def _leaf_rows(name: str, label: str, leaf: Any) -> int:
    refuse_not_dense(name, label, leaf)
    if leaf is None:
        raise errors.invalid_argument(
            name, None, "an array in every part of the data", what=f"`{label}` is None"
        )
    if not hasattr(leaf, "shape"):
        leaf = np.asarray(leaf)
    rows = _rows(leaf)
    if rows is None:
        raise errors.invalid_argument(
            name, leaf, "arrays with a first (batch) dimension", what=f"`{label}` is a scalar"
        )
    if isinstance(leaf, np.ndarray):
        check_values(name, label, leaf)
    return rows


def check_arrays(**parts: Any) -> int:
    """Checks that every array in `parts` (x, y, sample_weight) has the same rows.

    Every part must be an array with a first dimension, of numbers or strings;
    a part of `x` may be `None` (an optional input left out, as Keras allows:
    `Expected` checks that the model's input is optional).

    Returns:
        The number of rows.
    """
    lengths: dict[str, int] = {}
    for name, value in parts.items():
        if value is None:
            continue
        for label, leaf in labelled_leaves(value, name):
            if leaf is None and name == "x" and value is not None:
                continue
            lengths[label] = _leaf_rows(name, label, leaf)
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


def check_batches(element_spec: Any, source: str) -> None:
    """Checks that a source yields batches: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.

    Every part must be a dense tensor with a first (batch) dimension; found
    here, before the infeed is built, as its padding would fail on the rest.

    Args:
        element_spec: The source's element spec.
        source: What yields the elements, for messages ("tf.data.Dataset").
    """
    if isinstance(element_spec, tuple) and not 1 <= len(element_spec) <= 3:
        raise errors.invalid_argument(
            "x",
            f"a {source} of {len(element_spec)}-tuples",
            "elements x, (x,), (x, y) or (x, y, sample_weight)",
            what=f"The {source} yields tuples of {len(element_spec)} parts",
        )
    parts = keras.utils.unpack_x_y_sample_weight(element_spec)
    for name, part in zip(("x", "y", "sample_weight"), parts, strict=True):
        for label, spec in labelled_leaves(part, name) if part is not None else ():
            what = _not_a_batch(spec)
            if what:
                raise errors.invalid_argument(
                    name,
                    spec,
                    f"a {source} of batches: every part a tensor (dense, ragged or sparse) "
                    "with a first (batch) dimension (batch it with `.batch(...)`)",
                    what=f"`{label}` in the {source}'s elements is {what}",
                )


def _not_a_batch(spec: Any) -> str | None:
    """What keeps one part of an element from being a batch tpufit can pad, or `None`."""
    if getattr(spec, "shape", None) is None:
        return "None"
    if not isinstance(spec, (tf.TensorSpec, *composite.COMPOSITE_SPECS)):
        return f"a {type(spec).__name__.removesuffix('Spec')}"
    return "not batched (a scalar per element)" if spec.shape.rank == 0 else None


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
