"""tpufit/data/expected.py: data the model cannot take fails before any device work, named."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import FEATURES, compiled, tiny_data, tiny_model

import tpufit
from tpufit.config import Mode
from tpufit.data.expected import Expected, ModelInputs, Targets


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


# --- Targets -------------------------------------------------------------------------


def compiled_tiny(loss="sparse_categorical_crossentropy") -> keras.Model:
    model = tiny_model()
    model.compile(optimizer="sgd", loss=loss)
    return model


@pytest.mark.parametrize(
    "loss",
    [
        "sparse_categorical_crossentropy",
        keras.losses.sparse_categorical_crossentropy,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ],
)
def test_a_sparse_loss_however_given_knows_the_classes(loss):
    targets = Targets.of(compiled_tiny(loss), Mode.TRAIN)
    assert targets.output == (None, 3)
    targets.check_labels(np.array([0, 2, 1.9]))
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        targets.check_labels(np.array([0.0, 3.0, np.nan]))
    message = str(raised.value)
    assert "`y` holds labels that are not classes of the model" in message
    assert (
        "from 0 to 2" in message and "2 such labels, the first np.float64(3.0) in row 1" in message
    )


def test_the_ignored_class_is_a_valid_label():
    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)
    Targets.of(compiled_tiny(loss), Mode.EVAL).check_labels(np.array([-1, 0, 2]))


@pytest.mark.parametrize("shape", [(4,), (4, 1), (4, 1, 1)])
def test_sparse_labels_of_shapes_keras_takes_pass(shape):
    Targets.of(compiled_tiny(), Mode.TRAIN).check(spec(*shape, dtype=tf.int64), None)


@pytest.mark.parametrize("shape", [(4, 2), (4, 3), (4, 2, 1)])
def test_sparse_labels_of_other_shapes_are_an_error(shape):
    with pytest.raises(tpufit.InvalidArgumentError, match="`y` does not fit the model's loss"):
        Targets.of(compiled_tiny(), Mode.TRAIN).check(spec(*shape), None)


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_one_weight_per_row_passes(shape):
    Targets.of(compiled_tiny("mse"), Mode.TRAIN).check(spec(4, 3), spec(*shape))


@pytest.mark.parametrize("shape", [(4, 3), (4, 1, 1), (4, 2)])
def test_weights_that_do_not_fit_the_rows_losses_are_an_error(shape):
    with pytest.raises(tpufit.InvalidArgumentError, match="`sample_weight` does not fit"):
        Targets.of(compiled_tiny("mse"), Mode.TRAIN).check(spec(4, 3), spec(*shape))


def test_nested_targets_or_weights_for_one_output_are_an_error():
    targets = Targets.of(compiled_tiny(), Mode.EVAL)
    with pytest.raises(tpufit.InvalidArgumentError, match="`sample_weight` is nested"):
        targets.check(spec(4), {"w": spec(4)})
    with pytest.raises(tpufit.InvalidArgumentError, match="`y` is nested"):
        targets.check([spec(4), spec(4)], None)


def test_a_loss_of_the_users_own_is_not_second_guessed():
    targets = Targets.of(compiled_tiny(lambda y, p: keras.ops.square(y - p)), Mode.TRAIN)
    assert targets.output is None
    targets.check(spec(4, 3), spec(4, 3))  # Weights per element: the loss may keep them.


def test_missing_or_string_targets_and_weights_are_named():
    targets = Targets.of(compiled_tiny("mse"), Mode.TRAIN)
    with pytest.raises(tpufit.InvalidArgumentError, match="The data has no targets"):
        targets.check(None, None)
    with pytest.raises(tpufit.InvalidTypeError, match="`y` holds strings"):
        targets.check(spec(4, dtype=tf.string), None)
    with pytest.raises(tpufit.InvalidTypeError, match="`sample_weight` holds strings"):
        targets.check(spec(4), spec(4, dtype=tf.string))


def test_nothing_is_asked_of_targets_without_a_loss_or_in_predict():
    assert Targets.of(compiled_tiny(), Mode.PREDICT) is None
    model = tiny_model()
    model.compile(optimizer="sgd", metrics=["mae"])
    assert Targets.of(model, Mode.TRAIN) is None


# --- Through TPUModel: raised before any device work, weights unchanged -------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda tm, x, y: tm.fit(x.astype(str), y, verbose=0), tpufit.InvalidTypeError),
        (lambda tm, x, y: tm.evaluate(x[:, :5], y, verbose=0), tpufit.InvalidArgumentError),
        (lambda tm, x, y: tm.predict({"a": x}, verbose=0), tpufit.InvalidArgumentError),
        (lambda tm, x, y: tm.fit(x, y + 3, verbose=0), tpufit.InvalidArgumentError),
        (
            lambda tm, x, y: tm.fit(
                tf.data.Dataset.from_tensor_slices((x.astype(str), y)).batch(4), verbose=0
            ),
            tpufit.InvalidTypeError,
        ),
        (
            lambda tm, x, y: tm.evaluate(tf.data.Dataset.from_tensor_slices(x).batch(4), verbose=0),
            tpufit.InvalidArgumentError,
        ),
        (
            lambda tm, x, y: tm.fit(x, y, validation_data=(x, y[:, None, None, None]), verbose=0),
            tpufit.InvalidArgumentError,
        ),
    ],
)
def test_data_the_model_cannot_take_fails_before_any_device_work(call, error):
    tm = compiled()
    weights = tm.model.get_weights()
    x, y = tiny_data(10)
    with pytest.raises(error):
        call(tm, x, y)
    assert tm.traces == {} and tm.global_step == 0
    for before, after in zip(weights, tm.model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
