"""class_weight → per-row sample weights, as Keras computes them, for arrays and datasets."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASSES, assert_same_weights, compile_args, keras_twin, tiny_data
from hypothesis import given, settings
from hypothesis import strategies as st
from user_inputs import BATCH, ROWS, Batches, batches, compiled

import tpufit
from tpufit.data import weighting

CLASS_WEIGHT = {0: 0.5, 2: 4.0}


@pytest.mark.parametrize(
    "y",
    [
        np.array([0, 1, 2, 2, 5]),  # sparse labels; 1 and 5 have no weight: 1.0
        np.array([[0], [1], [2], [2], [5]]),  # [rows, 1]
        np.array([0.0, 1.2, 1.6, 2.4, 5.0]),  # rounded, as Keras does
        np.eye(6)[[0, 1, 2, 2, 5]],  # one-hot: argmax
    ],
    ids=["sparse", "column", "rounded", "one-hot"],
)
def test_weights_follow_keras_rules_on_arrays_and_datasets(y):
    expected = [0.5, 1.0, 4.0, 4.0, 1.0]
    np.testing.assert_allclose(weighting.sample_weights_for(y, CLASS_WEIGHT), expected)
    dataset = tf.data.Dataset.from_tensors((np.zeros((5, 2)), y))
    _, _, weights = next(iter(weighting.add_to_dataset(dataset, CLASS_WEIGHT)))
    np.testing.assert_allclose(weights, expected)


@settings(max_examples=25, deadline=None)
@given(
    labels=st.lists(st.integers(-1, 6), min_size=1, max_size=30),
    table=st.dictionaries(st.integers(0, 5), st.floats(0.0, 10.0), min_size=1),
)
def test_host_and_dataset_lookups_agree(labels, table):
    y = np.array(labels)
    dataset = tf.data.Dataset.from_tensors((np.zeros((len(y), 1)), y))
    _, _, weights = next(iter(weighting.add_to_dataset(dataset, table)))
    np.testing.assert_allclose(weighting.sample_weights_for(y, table), weights, rtol=1e-6)
    for label, weight in zip(labels, weighting.sample_weights_for(y, table), strict=True):
        assert weight == pytest.approx(table.get(label, 1.0))


@pytest.mark.parametrize("bad", [{}, {-1: 1.0}, {0: "heavy"}, {0.5: 1.0}, {True: 1.0}, [1.0]])
def test_bad_class_weight_is_an_error_naming_it(bad):
    with pytest.raises(tpufit.InvalidArgumentError, match="class_weight"):
        weighting.check_class_weight(bad)


def test_class_weight_needs_one_target_and_no_sample_weight():
    with pytest.raises(tpufit.InvalidArgumentError, match="sample_weight"):
        weighting.check_combination(np.zeros(3), np.ones(3), {0: 1.0})
    with pytest.raises(tpufit.InvalidArgumentError, match="single"):
        weighting.check_combination({"a": np.zeros(3)}, None, {0: 1.0})
    with pytest.raises(tpufit.InvalidArgumentError, match="targets"):
        weighting.check_combination(None, None, {0: 1.0})
    dataset = tf.data.Dataset.from_tensors((np.zeros((3, 1)), np.zeros(3), np.ones(3)))
    with pytest.raises(tpufit.InvalidArgumentError, match="3 part"):
        weighting.add_to_dataset(dataset, {0: 1.0})
    two_targets = tf.data.Dataset.from_tensors((np.zeros((3, 1)), (np.zeros(3), np.zeros(3))))
    with pytest.raises(tpufit.InvalidArgumentError, match="single"):
        weighting.add_to_dataset(two_targets, {0: 1.0})


def test_no_class_weight_leaves_a_dataset_as_it_is():
    dataset = tf.data.Dataset.from_tensors((np.zeros((3, 1)), np.zeros(3)))
    assert weighting.with_class_weight(dataset, None) is dataset


# --- end to end, every input kind -------------------------------------------------------


@pytest.mark.parametrize("source", ["arrays", "dataset", "generator", "py_dataset", "one_hot"])
def test_class_weight_trains_step_for_step_like_keras(source):
    x, y = tiny_data(ROWS)
    class_weight = {0: 0.5, 1: 3.0}  # class 2 is missing: weight 1
    targets = keras.utils.to_categorical(y, CLASSES) if source == "one_hot" else y
    data = {
        "arrays": (x, y),
        "one_hot": (x, targets),
        "dataset": (tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH),),
        "generator": (batches(x, y),),
        "py_dataset": (Batches(x, y),),
    }[source]
    tm = compiled()
    twin = keras_twin(tm.model)
    if source == "one_hot":
        for model in (tm, twin):
            loss = keras.losses.CategoricalCrossentropy(from_logits=True)
            model.compile(**compile_args() | {"loss": loss})
    tm.fit(*data, batch_size=None if len(data) == 1 else BATCH, epochs=2, shuffle=False,
           class_weight=class_weight, verbose=0)  # fmt: skip
    twin.fit(x, targets, batch_size=BATCH, epochs=2, shuffle=False, class_weight=class_weight,
             verbose=0)  # fmt: skip
    assert_same_weights(tm.model, twin)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (
            {"class_weight": {0: 1.0}, "sample_weight": np.ones(20)},
            ["class_weight", "sample_weight"],
        ),
        ({"class_weight": {"cat": 1.0}}, ["class_weight", "'cat'"]),
        ({"class_weight": [1.0, 2.0]}, ["class_weight"]),
    ],
)
def test_bad_class_weight_fails_before_device_work(kwargs, words):
    x, y = tiny_data(20)
    tm = compiled()
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tm.fit(x, y, verbose=0, **kwargs)
    for word in words:
        assert word in str(raised.value)
    assert tm.traces == {}
