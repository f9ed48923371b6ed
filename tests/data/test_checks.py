"""Tests of tpufit/data/checks.py: each data check raises a tpufit error saying what to do."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse
import tensorflow as tf
from conftest import FEATURES, tiny_data
from hypothesis import given, settings
from hypothesis import strategies as st

import tpufit
from tpufit import errors
from tpufit.data import checks as validation
from tpufit.data import padding


def spec(*shape, dtype=tf.float32):
    return tf.TensorSpec(shape, dtype)


# --- check_positive_int / check_batch_size ------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (-3, "-3"),
        (2.5, "2.5"),
        ("64", "'64'"),
        (True, "True"),
        (None, "None"),
    ],
)
def test_bad_batch_size_names_it_the_value_and_what_works(value, shown):
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_batch_size(value, 1)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "`batch_size`" in message
    assert f"Received: batch_size={shown}" in message
    assert "positive int" in message


@pytest.mark.parametrize("value", [1, 64, np.int64(64), np.int32(3)])
def test_positive_int_batch_sizes_pass(value):
    validation.check_batch_size(value, 1)


def test_batch_size_not_splitting_over_replicas_names_replicas_and_nearest_sizes():
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_batch_size(10, 4)
    message = str(info.value)
    assert "4 replicas" in message
    assert "8" in message and "12" in message
    assert "batch_size=10" in message


@settings(max_examples=100, deadline=None)
@given(batch_size=st.integers(1, 2048), replicas=st.integers(1, 16))
def test_batch_size_must_be_a_multiple_of_the_replicas(batch_size, replicas):
    if batch_size % replicas == 0:
        validation.check_batch_size(batch_size, replicas)
        return
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_batch_size(batch_size, replicas)
    below, above = padding.nearest_valid_batch_sizes(batch_size, replicas)
    message = str(info.value)
    assert f"{replicas} replicas" in message
    if below == above:
        assert f"the nearest valid size is {above}." in message
    else:
        assert f"the nearest valid sizes are {below} and {above}." in message


@pytest.mark.parametrize("name", ["steps", "epochs", "steps_per_epoch"])
def test_check_positive_int_names_the_argument(name):
    with pytest.raises(tpufit.InvalidArgumentError, match=f"`{name}`.*{name}=0"):
        errors.check_positive_int(name, 0)


def test_check_positive_int_allows_none_only_when_asked():
    errors.check_positive_int("steps", None, allow_none=True)
    with pytest.raises(tpufit.InvalidArgumentError, match="or None"):
        errors.check_positive_int("steps", -1, allow_none=True)
    with pytest.raises(tpufit.InvalidArgumentError, match="steps=None"):
        errors.check_positive_int("steps", None)


# --- check_arrays --------------------------------------------------------------------


def test_check_arrays_returns_the_shared_row_count():
    x, y = tiny_data(7)
    assert validation.check_arrays(x=x, y=y, sample_weight=np.ones(7)) == 7
    assert validation.check_arrays(x=x, y=None, sample_weight=None) == 7
    assert validation.check_arrays(x={"a": x, "b": [x, x]}, y=y) == 7


def test_x_and_y_of_different_lengths_names_both_lengths():
    x, _ = tiny_data(10)
    _, y = tiny_data(9)
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_arrays(x=x, y=y)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "x has 10 rows" in message
    assert "y has 9 rows" in message


def test_sample_weight_of_a_different_length_is_named():
    x, y = tiny_data(10)
    with pytest.raises(tpufit.InvalidArgumentError, match="sample_weight has 4 rows"):
        validation.check_arrays(x=x, y=y, sample_weight=np.ones(4))


def test_nested_inputs_of_different_lengths_name_the_part():
    x, y = tiny_data(6)
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_arrays(x=(x, x[:5]), y=y)
    message = str(info.value)
    assert "x[0] has 6 rows" in message and "x[1] has 5 rows" in message


@pytest.mark.parametrize(
    "arrays",
    [
        {"x": np.zeros((0, FEATURES))},
        {"x": np.zeros((0, FEATURES)), "y": np.zeros(0)},
        {"x": {"a": np.zeros((0, 2))}},
    ],
)
def test_empty_arrays_are_an_error_naming_x(arrays):
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_arrays(**arrays)
    message = str(info.value)
    assert "x=" in message
    assert "empty" in message and "at least one row" in message


def test_scalar_data_is_an_error_naming_it():
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_arrays(x=np.zeros((3, 2)), y=np.float32(1.0))
    message = str(info.value)
    assert "`y` is a scalar" in message
    assert "first (batch) dimension" in message


@pytest.mark.parametrize("x", [{}, ()])
def test_data_without_any_array_is_a_tpufit_error(x):
    with pytest.raises(tpufit.InvalidArgumentError, match="x"):
        validation.check_arrays(x=x)


def test_parts_are_named_by_their_path():
    x, y = tiny_data(6)
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_arrays(x={"b": [x, x[:5]], "a": x}, y=y)
    message = str(info.value)
    assert "x['a'] has 6 rows" in message and "x['b'][1] has 5 rows" in message


def test_a_none_part_of_x_is_left_to_the_model_and_of_y_named():
    # None in `x` may feed an optional input (`Expected` checks that it is one).
    assert validation.check_arrays(x={"age": np.zeros(3), "city": None}) == 3
    with pytest.raises(tpufit.InvalidArgumentError, match=r"`y\['city'\]` is None"):
        validation.check_arrays(x=np.zeros(3), y={"age": np.zeros(3), "city": None})
    with pytest.raises(tpufit.InvalidArgumentError, match="holds no array"):
        validation.check_arrays(x=[None])


@pytest.mark.parametrize(
    ("array", "said"),
    [
        (np.array([1.0, "a"], dtype=object), "holds float objects, e.g. 1.0"),
        (np.array([[1, 2], [3]], dtype=object), "holds list objects"),
        (np.array([None, "a"], dtype=object), "holds NoneType objects"),
        (np.array(["2024-01-01"], dtype="datetime64[D]"), "holds datetime64[D] values"),
    ],
)
def test_arrays_of_other_things_than_numbers_or_strings_are_named(array, said):
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_arrays(x=array)
    assert f"`x` {said}" in str(info.value) and "pad_sequences" in str(info.value)


@pytest.mark.parametrize(
    "array",
    [np.array(["a", "b"]), np.array(["a", b"b"], dtype=object), np.array([b"a"]), np.ones(2, bool)],
)
def test_arrays_of_strings_or_numbers_pass(array):
    assert validation.check_arrays(x=array) == len(array)


# --- datasets ------------------------------------------------------------------------


def test_is_dataset():
    assert validation.is_dataset(tf.data.Dataset.range(3))
    assert not validation.is_dataset(np.arange(3))
    assert not validation.is_dataset([tf.data.Dataset.range(3)])


@pytest.mark.parametrize(
    ("element", "said"),
    [
        (
            ({"a": spec(4, 2), "b": tf.NoneTensorSpec()}, spec(4)),
            "`x['b']` in the tf.data.Dataset's elements is None",
        ),
        ((spec(4, 2), spec()), "`y` in the tf.data.Dataset's elements is not batched"),
        ((spec(4), spec(4), spec(4), spec(4)), "yields tuples of 4 parts"),
    ],
)
def test_a_dataset_must_yield_dense_batches(element, said):
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_batches(element, "tf.data.Dataset")
    assert said in str(info.value)


def test_dense_ragged_and_sparse_batches_pass():
    validation.check_batches((spec(None, 2), spec(None), spec(None)), "tf.data.Dataset")
    validation.check_batches({"a": spec(4, 2, dtype=tf.string)}, "tf.data.Dataset")
    validation.check_batches(
        (tf.RaggedTensorSpec([None, None]), tf.SparseTensorSpec([None, 3])), "tf.data.Dataset"
    )


@pytest.mark.parametrize("name", ["y", "sample_weight"])
def test_y_or_sample_weight_with_a_dataset_is_an_error_naming_it(name):
    kwargs = {"y": None, "sample_weight": None, name: np.arange(4)}
    with pytest.raises(tpufit.InvalidArgumentError) as info:
        validation.check_no_extras("tf.data.Dataset", **kwargs)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert f"`{name}`" in message
    assert f"Received: {name}=array([0, 1, 2, 3])" in message
    assert "None when x is a tf.data.Dataset" in message


def test_dataset_without_y_or_sample_weight_passes():
    validation.check_no_extras("tf.data.Dataset", None, None)


RAGGED = tf.ragged.constant([[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]])
SPARSE = tf.sparse.from_dense(np.eye(3, dtype="float32"))


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (RAGGED, "`x` is a tf.RaggedTensor"),
        (SPARSE, "`x` is a tf.SparseTensor"),
        (scipy.sparse.csr_matrix(np.eye(3)), "`x` is a scipy sparse csr_matrix"),
    ],
)
def test_validation_split_of_ragged_or_sparse_data_is_an_error_saying_what_works(data, said):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), sparse=True), keras.layers.Dense(1)])
    tpufit.attach(model)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(tpufit.InvalidArgumentError, match=f"{said}.*validation_data=") as raised:
        model.fit(data, np.zeros(3), validation_split=0.5, verbose=0)
    assert "Received: " in str(raised.value)
