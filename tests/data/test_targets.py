"""tpufit/data/targets.py: targets and weights a model's loss cannot take are named."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_model

import tpufit
from tpufit.config import Mode
from tpufit.data.targets import Targets


def spec(*shape, dtype=tf.float32):
    return tf.TensorSpec(shape, dtype)


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
