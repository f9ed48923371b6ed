"""`class_weight`: Keras's per-class weights turned into per-row sample weights.

Keras turns `class_weight={class: weight}` into a `sample_weight` of one
weight per row, looked up by the row's class: the integer label, the argmax of
a one-hot row, or the rounded value of a `[rows, 1]` label. Classes missing
from the dict weigh 1.0. tpufit does the same, for arrays on the host and for
datasets (and generators, `PyDataset`s and `input_fn`s) as a per-batch map
before padding; the padded steps then multiply the weights by the mask, so
padding rows still count nowhere.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import errors

_EXPECTED = "a dict mapping class indices (ints >= 0) to weights (numbers), e.g. {0: 1.0, 1: 5.0}"


def check_class_weight(class_weight: Any) -> dict[int, float] | None:
    """Returns `class_weight` as `{int: float}`, or `None`.

    Raises:
        InvalidArgumentError: It is not a dict of non-negative int keys and numeric values.
    """
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict) or not class_weight:
        raise errors.invalid_argument("class_weight", class_weight, _EXPECTED)
    checked = {}
    for key, value in class_weight.items():
        numeric = isinstance(value, (int, float, np.integer, np.floating))
        if not errors.is_int(key) or key < 0 or not numeric or isinstance(value, bool):
            raise errors.invalid_argument(
                "class_weight",
                class_weight,
                _EXPECTED,
                what=f"Invalid `class_weight` entry {key!r}: {value!r}",
            )
        checked[int(key)] = float(value)
    return checked


def _single_target_error(y: Any) -> errors.InvalidArgumentError:
    return errors.invalid_argument(
        "class_weight",
        "a dict",
        "a model with a single output (per-output class weights do not exist in Keras; "
        "pass per-row weights as sample_weight)",
        what=f"`class_weight` needs a single target, got {type(y).__name__} of targets",
    )


def check_combination(y: Any, sample_weight: Any, class_weight: dict | None) -> None:
    """Keras's rules: `class_weight` needs `y`, one target, and no `sample_weight`."""
    if class_weight is None:
        return
    if sample_weight is not None:
        raise errors.invalid_argument(
            "class_weight",
            class_weight,
            "None when sample_weight is given (Keras's rule: one or the other; "
            "multiply the class weights into sample_weight instead)",
            what="`class_weight` and `sample_weight` were both given",
        )
    if y is None:
        raise errors.invalid_argument(
            "class_weight", class_weight, "targets y to look the classes up in"
        )
    if isinstance(y, (dict, list, tuple)):
        raise _single_target_error(y)


def sample_weights_for(y: np.ndarray, class_weight: dict[int, float]) -> np.ndarray:
    """Returns one weight per row of `y`, as Keras computes it for arrays.

    Example:
        >>> sample_weights_for(np.array([0, 2, 1]), {0: 0.5, 2: 3.0}).tolist()
        [0.5, 3.0, 1.0]
    """
    labels = np.asarray(y)
    if labels.ndim > 1:
        labels = np.argmax(labels, axis=-1) if labels.shape[-1] != 1 else labels[..., 0]
    labels = np.round(labels).astype(np.int64).reshape(labels.shape[0], -1)[:, 0]
    table = _table(class_weight).numpy()
    inside = (labels >= 0) & (labels < len(table))
    weights = np.ones(labels.shape[0], keras.config.floatx())
    weights[inside] = table[labels[inside]]
    return weights


def _table(class_weight: dict[int, float]) -> tf.Tensor:
    size = max(class_weight) + 1
    return tf.constant([class_weight.get(c, 1.0) for c in range(size)], dtype=keras.config.floatx())


def with_class_weight(dataset: tf.data.Dataset, class_weight: dict | None) -> tf.data.Dataset:
    """Returns `dataset` with class weights added (`add_to_dataset`), or as it is without any."""
    if class_weight is None:
        return dataset
    return add_to_dataset(dataset, class_weight)


def add_to_dataset(dataset: tf.data.Dataset, class_weight: dict[int, float]) -> tf.data.Dataset:
    """Returns `dataset` with class weights added to its `(x, y)` batches: `(x, y, weights)`.

    Raises:
        InvalidArgumentError: The elements are not `(x, y)` with a single `y`.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        parts = len(spec) if isinstance(spec, tuple) else 1
        raise errors.invalid_argument(
            "class_weight",
            class_weight,
            "data yielding (x, y): with (x,) there are no classes, and with "
            "(x, y, sample_weight) Keras allows no class_weight",
            what=f"`class_weight` was given for elements of {parts} part(s)",
        )
    if not isinstance(spec[1], tf.TensorSpec):
        raise _single_target_error(spec[1])
    table = _table(class_weight)

    def add_weights(x, y):
        labels = y
        if labels.shape.rank is not None and labels.shape.rank >= 2:
            labels = tf.cond(
                tf.shape(labels)[-1] > 1,
                lambda: tf.cast(tf.argmax(y, axis=-1), tf.float32),
                lambda: tf.cast(y[..., 0], tf.float32),
            )
            labels = tf.reshape(labels, [tf.shape(y)[0], -1])[:, 0]
        labels = tf.cast(tf.round(tf.cast(labels, tf.float32)), tf.int32)
        inside = (labels >= 0) & (labels < tf.shape(table)[0])
        looked_up = tf.gather(table, tf.clip_by_value(labels, 0, tf.shape(table)[0] - 1))
        return x, y, tf.where(inside, looked_up, tf.ones_like(looked_up))

    return dataset.map(add_weights, num_parallel_calls=tf.data.AUTOTUNE)
