"""Generators and PyDatasets read ahead, checked batch by batch, and streamed."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tpufit
from tpufit.data import python_data


def test_batches_are_standardized_as_keras_packs_them():
    x = np.zeros((2, 3))
    assert isinstance(python_data.standardize(x), tuple)
    assert python_data.standardize([x, x])[0].dtype == np.float32
    assert isinstance(python_data.standardize({"a": x}), dict)
    assert python_data.describe(({"a": np.zeros((2, 3), "float32")}, np.zeros(2, "int64"))) == (
        "({'a': float32[2, 3]}, int64[2])"
    )


def test_only_one_shot_iterators_count_as_generators():
    assert python_data.is_generator(b for b in [])
    assert python_data.is_generator(iter([1]))
    assert not python_data.is_generator([1, 2])
    assert not python_data.is_generator(np.zeros(3))


def test_checker_accepts_other_row_counts_and_rejects_other_structures():
    checker = python_data.BatchChecker(python_data.standardize((np.zeros((4, 2)),)), "generator")
    checker.check((np.ones((7, 2)),), 1)
    with pytest.raises(tpufit.InvalidArgumentError, match="batch 1 is"):
        checker.check((np.ones((7, 3)),), 1)
    with pytest.raises(tpufit.InvalidArgumentError, match="same number of rows"):
        python_data.BatchChecker(
            python_data.standardize((np.zeros((4, 2)), np.zeros(4))), "generator"
        ).check((np.ones((7, 2)), np.zeros(6)), 2)


def test_generator_source_reads_two_batches_ahead_and_streams_the_rest_once():
    pulled = []

    def generator():
        for i in range(5):
            pulled.append(i)
            yield (np.full((2, 1), i, "float32"),)

    source = python_data.GeneratorSource(generator())
    assert pulled == [0, 1]
    rows = [int(b[0][0, 0]) for b in source.dataset(endless=False).as_numpy_iterator()]
    assert rows == [0, 1, 2, 3, 4]


class Squares(keras.utils.PyDataset):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.begun = self.ended = 0

    def __len__(self):
        return 3

    def __getitem__(self, index):
        return np.full((2, 1), index**2, "float32")

    def on_epoch_begin(self):
        self.begun += 1

    def on_epoch_end(self):
        self.ended += 1


@pytest.mark.parametrize("workers", [1, 3])
def test_py_dataset_source_makes_one_pass_per_iteration_with_epoch_hooks(workers):
    data = Squares(workers=workers)
    dataset = python_data.PyDatasetSource(data, shuffle=False).dataset()
    assert int(dataset.cardinality()) == 3
    for _ in range(2):
        values = [int(b[0][0, 0]) for b in dataset.as_numpy_iterator()]
        assert values == [0, 1, 4]
    assert data.begun == data.ended == 2
