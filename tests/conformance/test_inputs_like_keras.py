"""Conformance: inputs Keras takes beyond dense arrays, run through `attach`, give Keras's results.

After `keras/src/trainers/trainer_test.py`'s ragged and sparse cases: `None`
for an optional input from a generator; `tf.RaggedTensor` inputs as arrays
and from a `tf.data.Dataset`; `tf.SparseTensor` and scipy sparse inputs as
arrays, from a dataset and from a generator. Each case is plain Keras code
run once through `tpufit.attach` and once in plain Keras, from the same
weights, and compared: `fit`'s history and weights, `evaluate`, `predict`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse
import tensorflow as tf
from conftest import replicas
from like_keras import (
    assert_same_history,
    assert_same_values,
    assert_same_weights,
    evaluate_both,
    fit_both,
    predict_both,
    twins,
)

import tpufit

ROWS = 7  # Batches of 2: the last one is short.

one_replica = pytest.mark.skipif(
    replicas() > 1, reason="batches of 2 rows; test_inputs_on_replicas.py runs these on four"
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def targets(width: int, seed: int = 1) -> np.ndarray:
    return rng(seed).random((ROWS, width), dtype=np.float32)


def regression():
    return dict(loss="mse", optimizer=keras.optimizers.SGD(0.1), metrics=["mae"])


def on_fresh_generators(ours, theirs, make, *, validation=None):
    """`fit`, `evaluate` and `predict` on both, each call on a fresh generator from `make`.

    With `validation`, `fit` trains on those arrays and validates on the generator.
    """
    for model in (ours, theirs):
        if validation is None:
            model.fit(make(True), shuffle=False, verbose=0)
        else:
            model.fit(*validation, validation_data=make(True), shuffle=False, verbose=0)
    assert_same_history(ours.history, theirs.history)
    assert_same_weights(ours, theirs)
    assert_same_values(
        ours.evaluate(make(True), verbose=0), theirs.evaluate(make(True), verbose=0), what="eval"
    )
    assert_same_values(
        ours.predict(make(False), verbose=0), theirs.predict(make(False), verbose=0), what="pred"
    )


# --- None for an optional input, from a generator -----------------------------------------


class AddIfGiven(keras.layers.Layer):
    """Keras's own test layer for optional inputs: `x + o`, or `x` alone when `o` is None."""

    def call(self, x, o=None):
        return x if o is None else x + o


def optional_input_model() -> keras.Model:
    x, o = keras.Input((2,), name="x"), keras.Input((2,), name="o", optional=True)
    return keras.Model({"x": x, "o": o}, keras.layers.Dense(2)(AddIfGiven()(x, o)))


def without_optional(x, y=None):
    # Batches of 4 rows, which split over 1, 2 or 4 replicas.
    for start in range(0, len(x), 4):
        part = {"x": x[start : start + 4], "o": None}
        yield (part,) if y is None else (part, y[start : start + 4])


def test_none_for_an_optional_input_from_a_generator_as_keras():
    # 8 rows: whole batches on every replica count (a short one differs on several:
    # docs/exactness.md).
    x, y = rng().random((8, 2), dtype=np.float32), rng(1).random((8, 2), dtype=np.float32)
    ours, theirs, _ = twins(optional_input_model, regression)
    on_fresh_generators(ours, theirs, lambda y_too: without_optional(x, y if y_too else None))


# --- Ragged inputs -------------------------------------------------------------------------


class MeanOfRows(keras.layers.Layer):
    """The mean of each ragged row's items: one feature vector per row, whatever its length."""

    def call(self, x):
        return tf.reduce_mean(x, axis=1)


def ragged_model() -> keras.Model:
    items = keras.Input((None, 2), ragged=True)
    return keras.Model(items, keras.layers.Dense(1)(MeanOfRows()(items)))


def ragged_items(lengths=(1, 3, 2, 4, 1, 2, 3)) -> tf.RaggedTensor:
    values = rng(2).random((sum(lengths), 2), dtype=np.float32)
    return tf.RaggedTensor.from_row_lengths(values, list(lengths))


@one_replica
@pytest.mark.parametrize("partial_batch", ["pad", "true_size"])
def test_ragged_arrays_train_evaluate_and_predict_as_keras(partial_batch):
    x, y = ragged_items(), targets(1)
    config = tpufit.RunConfig(partial_batch=partial_batch)
    ours, theirs, _ = twins(ragged_model, regression, config=config)
    fit_both(ours, theirs, x, y, batch_size=2, epochs=2)
    evaluate_both(ours, theirs, x, y, batch_size=2)
    predict_both(ours, theirs, x, batch_size=2)


@one_replica
def test_a_dataset_of_ragged_batches_trains_evaluates_and_predicts_as_keras():
    dataset = tf.data.Dataset.from_tensor_slices((ragged_items(), targets(1))).batch(2)
    ours, theirs, _ = twins(ragged_model, regression)
    fit_both(ours, theirs, dataset, epochs=2)
    evaluate_both(ours, theirs, dataset)
    predict_both(ours, theirs, dataset.map(lambda x, y: x))


# --- Sparse inputs -------------------------------------------------------------------------


def sparse_model() -> keras.Model:
    return keras.Sequential([keras.Input((4,), sparse=True), keras.layers.Dense(3)])


def sparse_compile():
    return dict(loss="mse", optimizer=keras.optimizers.Adagrad(0.1), metrics=["mse"])


def mostly_zeros(rows: int = ROWS) -> np.ndarray:
    values = rng(3).random((rows, 4))
    return (values * (rng(4).random((rows, 4)) > 0.6)).astype("float32")


@one_replica
@pytest.mark.parametrize("kind", ["tf", "scipy"])
def test_sparse_arrays_train_evaluate_and_predict_as_keras(kind):
    dense, y = mostly_zeros(), targets(3)
    x = tf.sparse.from_dense(dense) if kind == "tf" else scipy.sparse.csr_matrix(dense)
    ours, theirs, _ = twins(sparse_model, sparse_compile)
    fit_both(ours, theirs, x, y, batch_size=2, epochs=2)
    evaluate_both(ours, theirs, x, y, batch_size=2)
    predict_both(ours, theirs, x, batch_size=2)


@one_replica
def test_a_dataset_of_sparse_batches_trains_evaluates_and_predicts_as_keras():
    x = tf.sparse.from_dense(mostly_zeros())
    dataset = tf.data.Dataset.from_tensor_slices((x, targets(3))).batch(2)
    ours, theirs, _ = twins(sparse_model, sparse_compile)
    fit_both(ours, theirs, dataset, epochs=2)
    evaluate_both(ours, theirs, dataset)
    predict_both(ours, theirs, dataset.map(lambda x, y: x))


def sparse_batches(kind: str, with_targets: bool = True):
    """Keras's `sparse_generator`: batches of 2 rows, tf or scipy sparse."""
    dense, y = mostly_zeros(), targets(3)
    for start in range(0, ROWS, 2):
        part = dense[start : start + 2]
        x = tf.sparse.from_dense(part) if kind == "tf" else scipy.sparse.csr_matrix(part)
        yield (x, y[start : start + 2]) if with_targets else (x,)


@one_replica
@pytest.mark.parametrize("kind", ["tf", "scipy"])
def test_a_generator_of_sparse_batches_trains_evaluates_and_predicts_as_keras(kind):
    ours, theirs, _ = twins(sparse_model, sparse_compile)
    on_fresh_generators(ours, theirs, lambda y_too: sparse_batches(kind, y_too))
    # Validation generators are read into memory before the first epoch.
    validation = (mostly_zeros(4), targets(3)[:4])
    on_fresh_generators(
        ours, theirs, lambda y_too: sparse_batches(kind, y_too), validation=validation
    )


class SparseBatches(keras.utils.PyDataset):
    """The same batches as `sparse_batches("tf")`, from a `PyDataset`."""

    def __init__(self, with_targets: bool = True):
        super().__init__()
        self.batches = list(sparse_batches("tf", with_targets))

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


@one_replica
def test_a_py_dataset_of_sparse_batches_trains_evaluates_and_predicts_as_keras():
    ours, theirs, _ = twins(sparse_model, sparse_compile)
    on_fresh_generators(ours, theirs, SparseBatches)


# --- A dataset distributed by the strategy --------------------------------------------------


@one_replica
def test_a_dataset_distributed_by_the_strategy_trains_as_keras_on_one_replica():
    x, y = rng().random((ROWS, 2), dtype=np.float32), targets(1)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    # One replica: the default strategy hands the dataset back as it is.
    distributed = tf.distribute.get_strategy().distribute_datasets_from_function(
        lambda context: dataset
    )
    build = lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # noqa: E731
    ours, theirs, _ = twins(build, regression)
    fit_both(ours, theirs, distributed, epochs=2)
    evaluate_both(ours, theirs, distributed)
