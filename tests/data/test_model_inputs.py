"""tpufit/data/model_inputs.py: data a model's declared inputs cannot take is named."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf
from conftest import FEATURES, tiny_model

import tpufit
from tpufit.config import Mode
from tpufit.data.expected import Expected
from tpufit.data.model_inputs import ModelInputs


def spec(*shape, dtype=tf.float32):
    return tf.TensorSpec(shape, dtype)


def dict_model(as_list: bool = False) -> keras.Model:
    """Two named inputs, `age` (2 floats) and `city` (1 int), given to the model as a dict."""
    keras.utils.set_random_seed(0)
    age = keras.Input((2,), name="age")
    city = keras.Input((1,), name="city", dtype="int32")
    features = keras.layers.Concatenate()([age, keras.ops.cast(city, "float32")])
    inputs = [age, city] if as_list else {"age": age, "city": city}
    return keras.Model(inputs, keras.layers.Dense(3)(features))


def string_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    words = keras.Input((1,), dtype="string", name="word")
    ids = keras.layers.StringLookup(vocabulary=["a", "b"])(words)
    return keras.Model(words, keras.layers.Dense(2)(keras.ops.cast(ids, "float32")))


# --- ModelInputs: what Keras would match, accepted; what it would refuse, a tpufit error ---


@pytest.mark.parametrize(
    "x",
    [
        spec(4, FEATURES),
        spec(4, FEATURES, dtype=tf.int64),  # Keras casts numbers.
        spec(4, FEATURES, dtype=tf.bool),
        spec(4, FEATURES, 1),  # A trailing 1 is squeezed.
        spec(None, FEATURES),
        (spec(4, FEATURES), spec(4, 3)),  # A Sequential model takes the first part.
    ],
)
def test_sequential_inputs_accept_what_keras_accepts(x):
    ModelInputs.of(tiny_model()).check(x)


@pytest.mark.parametrize(
    ("x", "error", "said"),
    [
        (spec(4, FEATURES, dtype=tf.string), tpufit.InvalidTypeError, "`x` holds strings"),
        (spec(4), tpufit.InvalidArgumentError, "`x` does not fit"),
        (spec(4, 5), tpufit.InvalidArgumentError, "shape (None, 6)"),
        (spec(4, FEATURES, 2), tpufit.InvalidArgumentError, "float32 rows of shape (6, 2)"),
        ({"a": spec(4, FEATURES)}, tpufit.InvalidArgumentError, "no data for the model's input"),
    ],
)
def test_sequential_inputs_refuse_what_keras_refuses(x, error, said):
    with pytest.raises(error) as raised:
        ModelInputs.of(tiny_model()).check(x)
    assert said in str(raised.value)
    assert "Received: x" in str(raised.value)


@pytest.mark.parametrize("as_list", [False, True])
def test_dict_inputs_are_matched_by_name(as_list):
    inputs = ModelInputs.of(dict_model(as_list))
    both = {"age": spec(4, 2), "city": spec(4, 1, dtype=tf.int64)}
    inputs.check(both)
    inputs.check({**both, "zzz": spec(4, 7)})  # Sorting after the inputs: unused, as in Keras.
    inputs.check((spec(4, 2), spec(4, 1)))  # By position.
    with pytest.raises(
        tpufit.InvalidArgumentError, match=r"no data for the model's input\(s\) \['city'\]"
    ):
        inputs.check({"age": spec(4, 2)})
    with pytest.raises(
        tpufit.InvalidTypeError, match=r"`x\['city'\]` holds strings .* takes int32"
    ):
        inputs.check({**both, "city": spec(4, 1, dtype=tf.string)})
    with pytest.raises(tpufit.InvalidArgumentError, match=r"`x\['age'\]` does not fit"):
        inputs.check({**both, "age": spec(4, 3)})
    with pytest.raises(tpufit.InvalidArgumentError, match="has 3 parts but the model has 2 inputs"):
        inputs.check((spec(4, 2), spec(4, 1), spec(4, 1)))


def test_a_dict_key_that_would_shift_a_dict_of_inputs_is_named():
    # Keras lines a dict up with a dict of inputs by sorted position: "aaa" would feed "age".
    with pytest.raises(tpufit.InvalidArgumentError, match="no input for: 'aaa'"):
        ModelInputs.of(dict_model()).check(
            {"aaa": spec(4, 2), "age": spec(4, 2), "city": spec(4, 1)}
        )


def test_numbers_for_a_string_input_are_named():
    inputs = ModelInputs.of(string_model())
    inputs.check(spec(4, dtype=tf.string))  # (rows,) gets its trailing 1 added, as in Keras.
    with pytest.raises(tpufit.InvalidTypeError) as raised:
        inputs.check(spec(4, 1, dtype=tf.int64))
    assert "`x` holds numbers but the model's input 'word' takes strings" in str(raised.value)
    assert "Received: x=int64 rows of shape (1,)" in str(raised.value)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


class OwnPredictStep(keras.Model):
    def predict_step(self, data):
        return self(data["features"])


def test_models_without_declared_inputs_or_with_their_own_step_are_not_guessed():
    assert ModelInputs.of(Subclassed()) is None
    assert ModelInputs.of(keras.Sequential([keras.layers.Dense(2)])) is None  # Not built.
    inputs = keras.Input((FEATURES,))
    own = OwnPredictStep(inputs, keras.layers.Dense(2)(inputs))
    assert Expected.of(own, Mode.PREDICT).inputs is None
    assert Expected.of(own, Mode.TRAIN).inputs is not None
