"""Strings from numpy, pandas and tf.data reach models taking them (`StringLookup`, ...).

Every run equals plain Keras on the same weights: predict row for row,
evaluate metric for metric, fit step for step, with a partial last batch
(10 rows in batches of 4). Plain Keras refuses numpy arrays of strings
("Invalid dtype: str160"), so it gets the same strings as a `tf.Tensor`.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import CLASSES, assert_same_weights, compiled, keras_twin

import tpufit

ROWS, BATCH = 10, 4
WORDS = np.array(["a", "b", "c", "zebra", "a", "b", "b", "c", "a", "q"])
TEXTS = np.array(
    ["red fox", "blue", "red red", "", "fox blue red", "x", "fox", "blue", "a b", "red"]
)
LABELS = np.array([0, 1, 2, 0, 1, 2, 2, 1, 0, 1])


def lookup_model() -> keras.Model:
    """`Input((1,), string)` → `StringLookup` → `Embedding` → `Dense`."""
    keras.utils.set_random_seed(0)
    words = keras.Input((1,), dtype="string", name="word")
    ids = keras.layers.StringLookup(vocabulary=["a", "b", "c"])(words)
    vectors = keras.layers.Flatten()(keras.layers.Embedding(4, 5)(ids))
    return keras.Model(words, keras.layers.Dense(CLASSES)(vectors))


def text_model(shape: tuple) -> keras.Model:
    """`Input(shape, string)` → `TextVectorization` → `Embedding` → mean → `Dense`."""
    keras.utils.set_random_seed(0)
    texts = keras.Input(shape, dtype="string")
    vectorize = keras.layers.TextVectorization(
        vocabulary=["red", "blue", "fox"], output_sequence_length=3
    )
    vectors = keras.layers.Embedding(5, 4)(vectorize(texts))
    pooled = keras.layers.GlobalAveragePooling1D()(vectors)
    return keras.Model(texts, keras.layers.Dense(CLASSES)(pooled))


def mixed_model() -> keras.Model:
    """A dict of a numeric input `age` and a string input `city`."""
    keras.utils.set_random_seed(0)
    age = keras.Input((1,), name="age")
    city = keras.Input((1,), dtype="string", name="city")
    codes = keras.layers.StringLookup(vocabulary=["Oslo", "Rome"], output_mode="one_hot")(city)
    features = keras.layers.Concatenate()([age, keras.layers.Flatten()(codes)])
    return keras.Model({"age": age, "city": city}, keras.layers.Dense(CLASSES)(features))


def assert_runs_like_keras(model: keras.Model, ours, theirs, y=LABELS) -> None:
    """predict, evaluate and one epoch of fit on `ours` (tpufit) equal Keras's on `theirs`."""
    tm = compiled(model)
    twin = keras_twin(model)
    with_y = y is not None
    np.testing.assert_allclose(
        tm.predict(ours, batch_size=BATCH, verbose=0),
        twin.predict(theirs, batch_size=BATCH, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    evaluated = tm.evaluate(ours, y, batch_size=BATCH, verbose=0, return_dict=True)
    expected = twin.evaluate(theirs, y, batch_size=BATCH, verbose=0, return_dict=True)
    assert evaluated.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(evaluated[name], value, rtol=1e-5, err_msg=name)
    tm.fit(ours, y, batch_size=BATCH, shuffle=False, verbose=0)
    twin.fit(theirs, y, batch_size=BATCH, shuffle=False, verbose=0)
    assert with_y or tm.global_step == 3
    assert_same_weights(tm.model, twin)


@pytest.mark.parametrize(
    "words",
    [
        WORDS[:, None],  # <U5
        WORDS.astype(object)[:, None],
        WORDS,  # (rows,): Keras adds the trailing 1.
        pd.DataFrame({"word": WORDS}),
        pd.DataFrame({"word": WORDS}, dtype="string"),
        pd.Series(WORDS, name="word", dtype=object),
    ],
    ids=["unicode", "object", "flat", "dataframe", "string_dtype", "series"],
)
def test_string_arrays_and_columns_run_like_keras(words):
    assert_runs_like_keras(lookup_model(), words, tf.constant(WORDS[:, None]))


def test_a_string_dataset_runs_like_keras():
    dataset = tf.data.Dataset.from_tensor_slices((WORDS[:, None], LABELS)).batch(BATCH)
    tm = compiled(lookup_model())
    twin = keras_twin(tm.model)
    np.testing.assert_allclose(
        tm.predict(dataset.map(lambda x, y: x), verbose=0),
        twin.predict(tf.constant(WORDS[:, None]), batch_size=BATCH, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        tm.evaluate(dataset, verbose=0), twin.evaluate(dataset, verbose=0), rtol=1e-5
    )
    tm.fit(dataset, epochs=2, verbose=0)
    twin.fit(dataset, epochs=2, verbose=0)
    assert_same_weights(tm.model, twin)


@pytest.mark.parametrize("shape", [(), (1,)])
def test_text_vectorization_runs_like_keras(shape):
    texts = TEXTS.reshape((ROWS, *shape))
    assert_runs_like_keras(text_model(shape), texts, tf.constant(texts))


def test_a_dict_of_numeric_and_text_columns_runs_like_keras():
    table = pd.DataFrame({"age": np.linspace(0.0, 1.0, ROWS), "city": ["Oslo", "Rome"] * 5})
    columns = {
        "age": table["age"].to_numpy("float32")[:, None],
        "city": tf.constant(table[["city"]].to_numpy().astype(str)),
    }
    assert_runs_like_keras(mixed_model(), dict(table), columns)


def test_strings_for_a_numeric_input_of_a_dict_model_name_the_column():
    table = pd.DataFrame({"age": ["old", "young"], "city": ["Oslo", "Rome"]})
    tm = compiled(mixed_model())
    with pytest.raises(tpufit.InvalidTypeError) as raised:
        tm.predict(dict(table), verbose=0)
    message = str(raised.value)
    assert "`x['age']` holds strings but the model's input 'age' takes float32" in message
    assert tm.traces == {}
