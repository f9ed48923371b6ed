"""Ragged and sparse parts of the data: their rows counted, copied and emptied as dense rows are.

A `tf.RaggedTensor` or `tf.SparseTensor` (a scipy sparse matrix becomes one,
as in Keras) has a first (batch) dimension like a dense array, but no static
shape past it. The infeed treats its rows as it treats dense rows: a short
batch is filled up to the static batch size with copies of its own real rows
(masked, so no result changes), and a stop batch holds rows of zeros. The
rows past the batch dimension keep their true sizes: the step is traced once
for the ragged or sparse spec, whatever sizes its batches hold. On several
replicas of one worker, ragged batches reach the replicas as shares cut here
(`replica_shares`), not split by `tf.distribute`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

COMPOSITE_SPECS = (tf.RaggedTensorSpec, tf.SparseTensorSpec)


def is_scipy_sparse(value: Any) -> bool:
    """Whether `value` is a scipy sparse matrix or array."""
    return (type(value).__module__ or "").startswith("scipy.sparse")


def is_composite(value: Any) -> bool:
    """Whether `value` is ragged or sparse data: tf.RaggedTensor, tf.SparseTensor or scipy."""
    return isinstance(value, (tf.RaggedTensor, tf.SparseTensor)) or is_scipy_sparse(value)


def any_composite(structure: Any) -> bool:
    """Whether any leaf of a nested structure is ragged or sparse data."""
    return any(is_composite(leaf) for leaf in tf.nest.flatten(structure))


def any_composite_spec(element_spec: Any) -> bool:
    """Whether any part of a dataset's element spec is ragged or sparse."""
    return any(isinstance(spec, COMPOSITE_SPECS) for spec in tf.nest.flatten(element_spec))


def any_ragged_spec(element_spec: Any) -> bool:
    """Whether any part of a dataset's element spec is ragged."""
    return any(isinstance(s, tf.RaggedTensorSpec) for s in tf.nest.flatten(element_spec))


def replica_shares(dataset: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    """Each batch of `dataset` as `replicas` consecutive batches: the replicas' shares, in order.

    The shares are those a distributed dataset gives (contiguous, `ceil(n /
    replicas)` rows each, replica 0 first, the last ones short or empty), cut
    here so that a distributed dataset need not split the batch: TensorFlow's
    split of a ragged batch hands an empty share's ragged rows back with the
    wrong rank (flat values `(0,)` for rows of shape `(None, 2)`), a failure
    in the middle of a run. Read through `distribute_datasets_from_function`,
    replica `k` of one worker gets every `replicas`-th batch from the `k`-th.
    """
    spec = dataset.element_spec
    static = tf.nest.flatten(spec)[0].shape[0]
    share_rows = static // replicas if static is not None and static % replicas == 0 else None

    def shares(*element):
        element = element[0] if len(element) == 1 else element
        rows = tf.cast(rows_of(tf.nest.flatten(element)[0]), tf.int64)
        per_replica = (rows + replicas - 1) // replicas

        def share(k):
            start = tf.minimum(k * per_replica, rows)
            positions = tf.range(start, tf.minimum(start + per_replica, rows))
            taken = tf.nest.map_structure(
                lambda t: None if t is None else gather_rows(t, positions), element
            )
            if share_rows is None:
                return taken
            return tf.nest.map_structure(
                lambda t, like: None if t is None else with_rows(t, like, share_rows),
                taken,
                element,
            )

        return tf.data.Dataset.range(replicas).map(share)

    return dataset.flat_map(shares)


def as_tensor(value: Any) -> Any:
    """One ragged or sparse value as a TF tensor, floating values in Keras's `floatx`.

    A scipy sparse matrix becomes a `tf.SparseTensor` (as Keras's adapters
    convert it), its entries in row-major order.
    """
    if is_scipy_sparse(value):
        coo = value.tocoo()
        indices = np.stack([coo.row, coo.col], axis=1).astype(np.int64)
        value = tf.sparse.reorder(tf.SparseTensor(indices, coo.data, coo.shape))
    if value.dtype.is_floating and value.dtype != keras.config.floatx():
        value = tf.cast(value, keras.config.floatx())
    return value


def num_rows(value: Any) -> int:
    """The rows of a ragged or sparse value (its first dimension)."""
    if isinstance(value, tf.RaggedTensor):
        return int(value.nrows())
    return int(value.shape[0])


def rows_of(leaf: Any) -> tf.Tensor:
    """The rows of one tensor of a batch, dense, ragged or sparse, as an int32 scalar tensor."""
    if isinstance(leaf, tf.RaggedTensor):
        return tf.cast(leaf.nrows(), tf.int32)
    if isinstance(leaf, tf.SparseTensor):
        return tf.cast(leaf.dense_shape[0], tf.int32)
    return tf.shape(leaf)[0]


def gather_rows(leaf: Any, positions: tf.Tensor) -> Any:
    """The rows `positions` of one tensor, dense, ragged or sparse, in that order."""
    if not isinstance(leaf, tf.SparseTensor):
        return tf.gather(leaf, positions)
    # A sparse tensor's rows as ragged rows of (indices, values), gathered as ragged rows are.
    leaf = tf.sparse.reorder(leaf)
    row_ids = leaf.indices[:, 0]
    splits = tf.ragged.segment_ids_to_row_splits(row_ids, num_segments=leaf.dense_shape[0])
    indices = tf.gather(tf.RaggedTensor.from_row_splits(leaf.indices[:, 1:], splits), positions)
    values = tf.gather(tf.RaggedTensor.from_row_splits(leaf.values, splits), positions)
    new_ids = tf.expand_dims(indices.value_rowids(), 1)
    shape = tf.concat([tf.shape(positions, out_type=tf.int64), leaf.dense_shape[1:]], 0)
    return tf.SparseTensor(tf.concat([new_ids, indices.flat_values], 1), values.flat_values, shape)


def with_rows(value: Any, like: Any, batch_size: int) -> Any:
    """`value` (rows gathered from `like`) with its static first dimension set to `batch_size`.

    The rest of the static shape is `like`'s, except a ragged or sparse
    value's: its rows keep their own sizes.
    """
    if isinstance(value, tf.RaggedTensor):
        splits = tf.ensure_shape(value.row_splits, [batch_size + 1])
        return tf.RaggedTensor.from_row_splits(value.values, splits, validate=False)
    if isinstance(value, tf.SparseTensor):
        value.set_shape([batch_size] + like.shape.as_list()[1:])
        return value
    value.set_shape([batch_size] + like.shape.as_list()[1:])
    return value


def zeros(spec: Any, batch_size: int) -> Any:
    """A batch of `batch_size` rows of zeros for `spec` (a stop batch: never stepped on).

    Unknown dimensions past the batch are 1; a ragged spec gets its ragged rank.
    """
    shape = [batch_size] + [1 if d is None else d for d in spec.shape[1:]]
    dense = tf.zeros(shape, spec.dtype)
    if isinstance(spec, tf.RaggedTensorSpec):
        return tf.RaggedTensor.from_tensor(
            dense, ragged_rank=spec.ragged_rank, row_splits_dtype=spec.row_splits_dtype
        )
    if isinstance(spec, tf.SparseTensorSpec):
        return tf.sparse.from_dense(dense)
    return dense


def concat(parts: list) -> Any:
    """Joins rows of several tensors of one kind, dense, ragged or sparse, in order.

    As Keras's predict joins its batches: `tf.sparse.concat` for sparse parts,
    `tf.concat` for ragged ones (and for dense tensors inside a program).
    """
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tf.SparseTensor):
        return tf.sparse.concat(axis=0, sp_inputs=list(parts), expand_nonconcat_dims=True)
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return tf.concat(list(parts), axis=0)


def compress(leaf: Any, keep: np.ndarray) -> Any:
    """The rows of `leaf` (numpy, ragged or sparse) where `keep` is true, in order."""
    if isinstance(leaf, (tf.RaggedTensor, tf.SparseTensor)):
        return gather_rows(leaf, tf.constant(np.flatnonzero(keep), tf.int64))
    return np.compress(keep, leaf, axis=0)
