"""The dataset adapter: a user's batches of varying size give Keras's results."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_same_weights, compiled, keras_twin, tiny_data

SIZES = (2, 3, 5, 4)


def growing_batches(with_targets: bool = True) -> tf.data.Dataset:
    """Batches of 2, 3, 5 and 4 rows: the first is not the largest, the batch size is unknown."""
    x, y = tiny_data(sum(SIZES))
    edges = np.cumsum((0,) + SIZES)
    batches = [(x[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    spec = (tf.TensorSpec((None, x.shape[1])), tf.TensorSpec((None,), tf.int64))

    def generate():
        for features, labels in batches:
            yield (features, labels) if with_targets else features

    dataset = tf.data.Dataset.from_generator(
        generate, output_signature=spec if with_targets else spec[0]
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(len(SIZES)))


def test_predict_on_batches_of_varying_size_gives_every_row_in_order():
    tm = compiled(iterations_per_loop=2)
    expected = keras_twin(tm.model).predict(growing_batches(False), verbose=0)

    np.testing.assert_allclose(tm.predict(growing_batches(False)), expected, rtol=1e-5, atol=1e-6)


def test_evaluate_on_batches_of_varying_size_equals_keras():
    tm = compiled(iterations_per_loop=2)
    expected = keras_twin(tm.model).evaluate(growing_batches(), verbose=0, return_dict=True)

    result = tm.evaluate(growing_batches(), return_dict=True)

    assert result == pytest.approx(expected, rel=1e-6)


def test_training_on_batches_of_varying_size_takes_each_batch_as_one_step():
    tm = compiled(iterations_per_loop=3)
    twin = keras_twin(tm.model)
    expected = twin.fit(growing_batches(), epochs=2, shuffle=False, verbose=0).history

    history = tm.fit(growing_batches(), epochs=2).history

    assert tm.global_step == 2 * len(SIZES)
    for name, values in expected.items():
        np.testing.assert_allclose(history[name], values, rtol=1e-5)
    assert_same_weights(tm.model, twin)
