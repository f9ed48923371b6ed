"""Conformance: a model whose outputs are ragged or sparse predicts as Keras's `predict` does.

Keras's `predict` joins its batches' ragged outputs with `tf.concat` and
sparse ones with `tf.sparse.concat`, and returns them as a `tf.RaggedTensor`
or `tf.SparseTensor` (dense outputs as numpy arrays). Through `tpufit.attach`
the same model gives the same tensors, row for row, without the padding rows
of the short last batch, over loops of several steps; `predict_batches`
joined equals `predict`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from like_keras import twins

ROWS = 7  # Batches of 2: the last one is short.


class KeepLarge(keras.layers.Layer):
    """Each row's values above 0.5, as a ragged row (its length varies with the data)."""

    def call(self, x):
        return tf.ragged.boolean_mask(x, x > 0.5)


class SparseLarge(keras.layers.Layer):
    """Each row's values above 0.5, the others left out of a sparse tensor."""

    def call(self, x):
        return tf.sparse.from_dense(tf.where(x > 0.5, x, tf.zeros_like(x)))


def model_with(*layers: type[keras.layers.Layer]) -> keras.Model:
    """A Dense layer feeding one output per layer given, and a dense output (a dict of them)."""
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(inputs)
    outputs = {layer.__name__: layer()(hidden) for layer in layers}
    outputs["dense"] = keras.layers.Dense(2)(hidden)
    return keras.Model(inputs, outputs)


def features() -> np.ndarray:
    return np.random.default_rng(0).random((ROWS, 4), dtype=np.float32)


def assert_same_tensor(mine, keras_value) -> None:
    """The same kind of tensor, rows, positions and values (to float tolerance)."""
    assert type(mine) is type(keras_value), (type(mine), type(keras_value))
    if isinstance(keras_value, tf.RaggedTensor):
        np.testing.assert_array_equal(mine.nested_row_lengths(), keras_value.nested_row_lengths())
        np.testing.assert_allclose(mine.flat_values, keras_value.flat_values, rtol=1e-5, atol=1e-6)
    elif isinstance(keras_value, tf.SparseTensor):
        np.testing.assert_array_equal(mine.dense_shape, keras_value.dense_shape)
        np.testing.assert_array_equal(mine.indices, keras_value.indices)
        np.testing.assert_allclose(mine.values, keras_value.values, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(mine, keras_value, rtol=1e-5, atol=1e-6)


def assert_same_outputs(mine: dict, keras_outputs: dict) -> None:
    assert sorted(mine) == sorted(keras_outputs)
    for name, value in keras_outputs.items():
        assert_same_tensor(mine[name], value)


@pytest.mark.parametrize(
    "layers",
    [(KeepLarge,), (SparseLarge,), (KeepLarge, SparseLarge)],
    ids=["ragged", "sparse", "both"],
)
def test_ragged_and_sparse_outputs_predict_as_keras(layers):
    ours, theirs, _ = twins(lambda: model_with(*layers))
    x = features()
    mine = ours.predict(x, batch_size=2, verbose=0)
    assert_same_outputs(mine, theirs.predict(x, batch_size=2, verbose=0))
    assert int(mine["dense"].shape[0]) == ROWS


def test_a_dataset_of_batches_predicts_ragged_outputs_as_keras():
    dataset = tf.data.Dataset.from_tensor_slices(features()).batch(2)
    ours, theirs, _ = twins(lambda: model_with(KeepLarge))
    assert_same_outputs(ours.predict(dataset, verbose=0), theirs.predict(dataset, verbose=0))


def test_predict_batches_of_ragged_and_sparse_outputs_join_to_predict():
    ours, _, tm = twins(lambda: model_with(KeepLarge, SparseLarge))
    x = features()
    whole = tm.predict(x, batch_size=2)
    pieces = list(tm.predict_batches(x, batch_size=2))
    assert len(pieces) > 1
    for name, value in whole.items():
        parts = [piece[name] for piece in pieces]
        if isinstance(value, tf.SparseTensor):
            joined = tf.sparse.concat(axis=0, sp_inputs=parts)
        elif isinstance(value, tf.RaggedTensor):
            joined = tf.concat(parts, axis=0)
        else:
            joined = np.concatenate(parts)
        assert_same_tensor(joined, value)
