"""class_weight → per-row sample weights, as Keras computes them, for arrays and datasets."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

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
