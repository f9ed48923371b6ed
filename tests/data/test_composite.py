"""tpufit/data/composite.py: ragged and sparse rows counted, copied and emptied like dense rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tpufit.config import Layout, Mode
from tpufit.data import composite, dataset_stream, padding


def ragged_rows(lengths: list[int]) -> tf.RaggedTensor:
    values = np.arange(sum(lengths) * 2, dtype="float32").reshape(-1, 2)
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def sparse_rows(rows: int, seed: int = 0) -> tuple[tf.SparseTensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    dense = (rng.random((rows, 5)) * (rng.random((rows, 5)) > 0.6)).astype("float32")
    return tf.sparse.from_dense(dense), dense


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    extra=st.integers(0, 5),
)
def test_a_short_ragged_batch_is_filled_with_copies_of_its_rows(lengths, extra):
    batch = ragged_rows(lengths)
    size = len(lengths) + extra
    padded, signals = padding.pad_batch(batch, size)
    assert padded.shape[0] == size  # Static: one trace whatever the rows' lengths.
    expected = [batch[i % len(lengths)].numpy().tolist() for i in range(size)]
    assert [row.numpy().tolist() for row in padded] == expected
    assert signals["mask"].numpy().tolist() == [1.0] * len(lengths) + [0.0] * extra


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), extra=st.integers(0, 5), seed=st.integers(0, 100))
def test_a_short_sparse_batch_is_filled_with_copies_of_its_rows(rows, extra, seed):
    batch, dense = sparse_rows(rows, seed)
    size = rows + extra
    padded, signals = padding.pad_batch((batch,), size)
    assert isinstance(padded[0], tf.SparseTensor) and padded[0].shape.as_list() == [size, 5]
    np.testing.assert_array_equal(
        tf.sparse.to_dense(padded[0]).numpy(), dense[np.arange(size) % rows]
    )
    assert float(signals["real_rows"][0]) == rows


def test_rows_are_counted_for_every_kind():
    assert int(composite.rows_of(ragged_rows([1, 0, 3]))) == 3
    assert int(composite.rows_of(sparse_rows(4)[0])) == 4
    assert int(composite.rows_of(tf.zeros((5, 2)))) == 5
    assert composite.num_rows(ragged_rows([2, 2])) == 2


def test_scipy_sparse_becomes_a_sparse_tensor_in_floatx():
    matrix = scipy.sparse.csr_matrix(np.array([[0, 2.0], [3.0, 0]]))
    tensor = composite.as_tensor(matrix)
    assert isinstance(tensor, tf.SparseTensor) and tensor.dtype == tf.float32
    np.testing.assert_array_equal(tf.sparse.to_dense(tensor).numpy(), matrix.toarray())


@pytest.mark.parametrize(
    "spec",
    [
        tf.RaggedTensorSpec([None, None, 2], tf.float32, ragged_rank=1),
        tf.SparseTensorSpec([None, 5], tf.float32),
    ],
)
def test_stop_batches_of_ragged_or_sparse_specs_fit_the_stream(spec):
    stream = tf.data.Dataset.from_tensors(composite.zeros(spec, 3))
    feed = dataset_stream.from_dataset(
        stream, mode=Mode.PREDICT, layout=Layout.PADDED, batch_size=3
    )
    elements = list(feed.dataset.take(3))
    assert [bool(signals["stop"][0]) for _, signals in elements] == [False, True, True]
    assert all(composite.rows_of(data) == 3 for data, _ in elements)


@pytest.mark.parametrize("rows", [4, 3, 1])
def test_replica_shares_cut_each_batch_as_a_distributed_dataset_splits_it(rows):
    batch = (ragged_rows(range(1, rows + 1)), {"mask": tf.range(rows, dtype=tf.float32)})
    shares = list(composite.replica_shares(tf.data.Dataset.from_tensors(batch), 4))
    per_replica = -(-rows // 4)  # TF's split: ceil(rows / replicas) each, replica 0 first
    expected = [list(range(rows))[k * per_replica : (k + 1) * per_replica] for k in range(4)]
    assert [signals["mask"].numpy().tolist() for _, signals in shares] == expected
    for (ragged, _), ids in zip(shares, expected, strict=True):
        assert ragged.flat_values.shape[1:] == (2,)  # an empty share keeps its rows' shape
        assert ragged.row_lengths().numpy().tolist() == [i + 1 for i in ids]


def test_replica_shares_of_a_static_batch_keep_a_static_share_size():
    batch = ragged_rows([1, 2, 3, 4])
    dataset = tf.data.Dataset.from_tensors(batch).map(lambda r: composite.with_rows(r, r, 4))
    assert composite.replica_shares(dataset, 2).element_spec.shape[0] == 2
