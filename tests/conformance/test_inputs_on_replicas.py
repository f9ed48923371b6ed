"""Conformance on four replicas: the Keras-conformance cases of inputs, in one child process.

Each case is plain Keras code run through `tpufit.attach` and in plain Keras
from the same weights (`like_keras.twins`). In this process it runs on one
replica; `test_the_input_cases_hold_on_four_replicas` runs the module again in
a child whose attached model runs under a `MirroredStrategy` of four CPUs, and
is compared with plain Keras on one device (tpufit is exact there, partial
batches included), or, for a distributed dataset of whole batches, with Keras
under the same strategy too. Batch sizes divide by four.

The cases: ragged and sparse inputs, ragged and sparse outputs, a dataset
distributed by the strategy, batches of varying size, a metric function
returning one number, stop flags on endless inputs, `steps_per_epoch`
shorter than the data, `None` for an optional input, namedtuple targets.
"""

from __future__ import annotations

import collections
import itertools

import keras
import numpy as np
import pytest
import scipy.sparse
import tensorflow as tf
from conftest import (
    Stopper,
    make_strategy,
    optional_input_model,
    replicas,
    run_pytest_with_replicas,
)
from like_keras import (
    LOOP,
    assert_same_history,
    assert_same_values,
    assert_same_weights,
    evaluate_both,
    fit_both,
    predict_both,
    twins,
)
from test_composite_outputs_like_keras import (
    KeepLarge,
    SparseLarge,
    assert_same_outputs,
    model_with,
)
from test_inputs_like_keras import ragged_model

import tpufit

ROWS = 14  # Batches of 4: the last one holds 2 rows, so two replicas get none.
BATCH = 4

# On one replica, the other conformance modules run these cases (with other batch sizes).
on_replicas = pytest.mark.skipif(replicas() == 1, reason="run by the four-replica child")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def rows(width: int, seed: int = 1, count: int = ROWS) -> np.ndarray:
    return rng(seed).random((count, width), dtype=np.float32)


def regression():
    return dict(loss="mse", optimizer=keras.optimizers.SGD(0.1), metrics=["mae"])


def dense_model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(replicas() > 1, reason="this is the child process")
def test_the_input_cases_hold_on_four_replicas():
    summary = run_pytest_with_replicas("conformance/test_inputs_on_replicas.py", 4, timeout=1500)
    assert " failed" not in summary, summary


# --- Ragged and sparse inputs and outputs ---------------------------------------------------


def ragged_items() -> tf.RaggedTensor:
    lengths = [1, 3, 2, 4, 1, 2, 3, 2, 1, 4, 2, 3, 1, 2]
    return tf.RaggedTensor.from_row_lengths(rows(2, 2, sum(lengths)), lengths)


@on_replicas
def test_ragged_inputs_train_evaluate_and_predict_as_keras():
    x, y = ragged_items(), rows(1)
    ours, theirs, _ = twins(ragged_model, regression)
    fit_both(ours, theirs, x, y, batch_size=BATCH, epochs=2)
    evaluate_both(ours, theirs, x, y, batch_size=BATCH)
    predict_both(ours, theirs, x, batch_size=BATCH)


def mostly_zeros() -> np.ndarray:
    return (rows(4, 3) * (rows(4, 4) > 0.6)).astype("float32")


@on_replicas
@pytest.mark.parametrize("kind", ["tf_dataset", "scipy"])
def test_sparse_inputs_train_evaluate_and_predict_as_keras(kind):
    def sparse_model():
        return keras.Sequential([keras.Input((4,), sparse=True), keras.layers.Dense(3)])

    ours, theirs, _ = twins(sparse_model, regression)
    y = rows(3)
    if kind == "scipy":
        x = scipy.sparse.csr_matrix(mostly_zeros())
        fit_both(ours, theirs, x, y, batch_size=BATCH, epochs=2)
        evaluate_both(ours, theirs, x, y, batch_size=BATCH)
        predict_both(ours, theirs, x, batch_size=BATCH)
        return
    dataset = tf.data.Dataset.from_tensor_slices((tf.sparse.from_dense(mostly_zeros()), y))
    dataset = dataset.batch(BATCH)
    fit_both(ours, theirs, dataset, epochs=2)
    evaluate_both(ours, theirs, dataset)
    predict_both(ours, theirs, dataset.map(lambda x, y: x))


@on_replicas
def test_ragged_and_sparse_outputs_predict_as_keras_and_join_from_predict_batches():
    ours, theirs, tm = twins(lambda: model_with(KeepLarge, SparseLarge))
    x = rows(4)
    mine = ours.predict(x, batch_size=BATCH, verbose=0)
    assert_same_outputs(mine, theirs.predict(x, batch_size=BATCH, verbose=0))
    pieces = list(tm.predict_batches(x, batch_size=BATCH))
    joined = {
        "KeepLarge": tf.concat([p["KeepLarge"] for p in pieces], axis=0),
        "SparseLarge": tf.sparse.concat(axis=0, sp_inputs=[p["SparseLarge"] for p in pieces]),
        "dense": np.concatenate([p["dense"] for p in pieces]),
    }
    assert_same_outputs(joined, mine)


# --- A dataset distributed by the strategy --------------------------------------------------


class Identity(keras.layers.Layer):
    """A layer with its own `call`: tpufit cannot prove padding invisible, so runs true size."""

    def call(self, x):
        return x * 1.0


def identity_model() -> keras.Model:
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(1)(Identity()(inputs)))


def distributed(how: str, dataset: tf.data.Dataset):
    strategy = make_strategy()
    if how == "experimental_distribute_dataset":
        return strategy.experimental_distribute_dataset(dataset)
    per_replica = dataset.unbatch().batch(BATCH // replicas())
    return strategy.distribute_datasets_from_function(lambda context: per_replica)


@on_replicas
@pytest.mark.parametrize(
    "build, how, count",
    [
        (dense_model, "experimental_distribute_dataset", 16),
        (identity_model, "experimental_distribute_dataset", ROWS),
        (dense_model, "from_function", ROWS),
        (identity_model, "from_function", 16),
    ],
    ids=["padded-whole", "true_size-partial", "padded-partial", "true_size-whole"],
)
def test_a_distributed_dataset_gives_its_batches_as_keras(build, how, count):
    x, y = rows(3, 0, count), rows(1, 1, count)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    inputs = dataset.map(lambda x, y: x)
    ours, theirs, _ = twins(build, regression)
    # Plain Keras on one device reads the dataset itself.
    mine = ours.fit(distributed(how, dataset), epochs=2, verbose=0)
    assert_same_history(mine, theirs.fit(dataset, epochs=2, verbose=0))
    assert_same_weights(ours, theirs)
    evaluated = ours.evaluate(distributed(how, dataset), verbose=0)
    assert_same_values(evaluated, theirs.evaluate(dataset, verbose=0), what="evaluate")
    predicted = ours.predict(distributed(how, inputs), verbose=0)
    assert_same_values(predicted, theirs.predict(inputs, verbose=0), what="predict")
    if count % BATCH:
        return  # Keras under a strategy weights an uneven split's replicas alike (exactness.md).
    keras.utils.set_random_seed(0)
    with make_strategy().scope():
        keras_on_replicas = build()
        keras_on_replicas.compile(**regression())
    keras_on_replicas.set_weights(theirs.get_weights())
    evaluate_both(ours, keras_on_replicas, distributed(how, dataset))
    predict_both(ours, keras_on_replicas, distributed(how, inputs))


@on_replicas
def test_a_short_true_size_batch_leaving_replicas_no_rows_evaluates_as_keras():
    # 14 rows in batches of 4: the last step's 2 rows go to two replicas, the others get none.
    ours, theirs, tm = twins(identity_model, regression)
    evaluate_both(ours, theirs, rows(3, 0), rows(1), batch_size=BATCH)
    assert tm.layouts["eval"].layout.value == "true_size"


@on_replicas
def test_a_dataset_distributed_for_another_replica_count_is_an_error_naming_both():
    dataset = tf.data.Dataset.from_tensor_slices((rows(3), rows(1))).batch(BATCH)
    elsewhere = tf.distribute.OneDeviceStrategy("/cpu:0").experimental_distribute_dataset(dataset)
    ours, _, _ = twins(dense_model, regression)
    with pytest.raises(tpufit.InvalidArgumentError, match="of 1 replicas for a strategy of 4"):
        ours.evaluate(elsewhere, verbose=0)


# --- Trainer behaviour (issue 15's cases) ---------------------------------------------------

SIZES = (4, 3, 4, 2)


def varying_batches(with_targets: bool = True) -> tf.data.Dataset:
    x, y = rows(3, 0, sum(SIZES)), rows(1, 1, sum(SIZES))
    ends = np.cumsum((0,) + SIZES)

    def generate():
        for start, end in itertools.pairwise(ends):
            yield (x[start:end], y[start:end]) if with_targets else x[start:end]

    spec = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None, 1], tf.float32))
    dataset = tf.data.Dataset.from_generator(
        generate, output_signature=spec if with_targets else spec[0]
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(len(SIZES)))


@on_replicas
def test_a_dataset_of_batches_of_varying_size_evaluates_and_predicts_as_keras():
    ours, theirs, _ = twins(dense_model, regression)
    evaluate_both(ours, theirs, varying_batches())
    predict_both(ours, theirs, varying_batches(False))


@on_replicas
def test_a_metric_function_returning_one_number_evaluates_as_keras():
    def compile_kwargs():
        return dict(loss="mse", metrics=[lambda y, p: keras.ops.mean(keras.ops.abs(y - p))])

    x, y = rows(3, 0, 16), rows(1, 1, 16)
    ours, theirs, _ = twins(dense_model, compile_kwargs)
    evaluate_both(ours, theirs, x, y, batch_size=BATCH)


def endless(with_targets: bool = True):
    x, y = rows(3, 0, 16), rows(1, 1, 16)
    for start in itertools.cycle(range(0, 16, BATCH)):
        part = slice(start, start + BATCH)
        yield (x[part], y[part]) if with_targets else (x[part],)


@on_replicas
def test_stop_flags_end_runs_on_endless_generators_as_keras():
    ours, theirs, _ = twins(dense_model, regression, keras_compile={"steps_per_execution": LOOP})
    results = []
    for model in (ours, theirs):
        train = Stopper("on_train_batch_end", "stop_training", after=2)
        history = model.fit(endless(), epochs=3, callbacks=[train], verbose=0)
        predict = Stopper("on_predict_batch_end", "stop_predicting", after=1)
        predicted = model.predict(endless(False), callbacks=[predict], verbose=0)
        results.append((history, predicted))
    (mine, my_rows), (keras_history, keras_rows) = results
    assert_same_history(mine, keras_history)
    assert_same_weights(ours, theirs)
    assert_same_values(my_rows, keras_rows, what="predict")


@on_replicas
def test_steps_per_epoch_shorter_than_the_data_continues_the_pass_as_keras():
    ours, theirs, _ = twins(dense_model, regression)
    fit_both(ours, theirs, rows(3, 0), rows(1), batch_size=BATCH, epochs=3, steps_per_epoch=3)


@on_replicas
def test_none_for_an_optional_input_trains_evaluates_and_predicts_as_keras():
    x, y = {"x": rows(2, 0), "o": None}, rows(2)
    ours, theirs, _ = twins(optional_input_model, regression)
    fit_both(ours, theirs, x, y, batch_size=BATCH, epochs=2)
    evaluate_both(ours, theirs, x, y, batch_size=BATCH)
    predict_both(ours, theirs, x, batch_size=BATCH)


Pair = collections.namedtuple("Pair", ["first", "second"])


def namedtuple_model() -> keras.Model:
    x = keras.Input((3,))
    first = keras.layers.Dense(1, name="first")(x)
    return keras.Model(x, Pair(first, keras.layers.Dense(1, name="second")(x)))


@on_replicas
def test_namedtuple_targets_and_outputs_keep_their_type_as_keras():
    def compile_kwargs():
        return dict(optimizer="sgd", loss=Pair("mse", "mae"), metrics=Pair(["mae"], ["mse"]))

    x, y = rows(3, 0, 16), Pair(rows(1, 1, 16), rows(1, 2, 16))
    ours, theirs, _ = twins(namedtuple_model, compile_kwargs)
    fit_both(ours, theirs, x, y, batch_size=BATCH, epochs=2)
    mine = predict_both(ours, theirs, x, batch_size=BATCH)
    assert type(mine) is Pair
