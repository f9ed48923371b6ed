"""tpufit/data/kinds.py: which adapter an input goes to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import tiny_data
from user_inputs import Batches, batches

from tpufit.data import kind_of


def _input_fn(ctx):
    return tf.data.Dataset.range(4).batch(2)


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda x: x, "arrays"),
        (lambda x: {"a": x, "b": [x]}, "arrays"),
        (lambda x: pd.DataFrame(x), "arrays"),
        (lambda x: tf.data.Dataset.from_tensor_slices(x).batch(4), "dataset"),
        (lambda x: batches(x), "generator"),
        (lambda x: iter([x]), "generator"),
        (lambda x: Batches(x), "py_dataset"),
        (lambda x: _input_fn, "input_fn"),
        (lambda x: None, "arrays"),
    ],
    ids=[
        "numpy",
        "nested",
        "pandas",
        "dataset",
        "generator",
        "iterator",
        "py_dataset",
        "input_fn",
        "none",
    ],  # fmt: skip
)
def test_each_input_has_one_kind(make, kind):
    x, _ = tiny_data(8)
    assert kind_of(make(x)) == kind


def test_a_list_and_an_array_are_arrays_not_iterators():
    assert kind_of([np.zeros(3)]) == "arrays"
    assert kind_of(np.zeros(3)) == "arrays"
