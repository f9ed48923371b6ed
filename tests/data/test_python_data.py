"""tpufit/data/python_data.py: what generators and PyDatasets share: their checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import python_data
from tpufit.data.request import InfeedRequest


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
    raised: list = []
    first = python_data.standardize((np.zeros((4, 2)),))
    checker = python_data.BatchChecker(first, "generator", raised)
    checker.check((np.ones((7, 2)),), 1)
    with pytest.raises(tpufit.InvalidArgumentError, match="batch 1 is"):
        checker.check((np.ones((7, 3)),), 1)
    with pytest.raises(tpufit.InvalidArgumentError, match="same number of rows"):
        python_data.BatchChecker(
            python_data.standardize((np.zeros((4, 2)), np.zeros(4))), "generator", raised
        ).check((np.ones((7, 2)), np.zeros(6)), 2)


def test_checker_records_every_error_it_raises_on_its_sources_list():
    raised: list = []
    checker = python_data.BatchChecker(python_data.standardize((np.zeros((4, 2)),)), "x", raised)
    checker.check((np.ones((3, 2)),), 1)
    assert raised == []
    with pytest.raises(tpufit.InvalidArgumentError) as error:
        checker.check({"a": np.ones((3, 2))}, 2)
    assert raised == [error.value]


def test_checker_refuses_objects_that_are_not_strings_in_any_batch_and_records_it():
    raised: list = []
    words = np.array([["a"], ["b"]], dtype=object)
    checker = python_data.BatchChecker(python_data.standardize((words,)), "generator", raised)
    checker.check((np.array([[b"c"]], dtype=object),), 1)
    with pytest.raises(tpufit.InvalidArgumentError, match=r"`x` holds float objects") as error:
        checker.check((np.array([[1.5]], dtype=object),), 2)
    assert raised == [error.value]
    with pytest.raises(tpufit.InvalidArgumentError, match=r"`y\[0\]` holds NoneType objects"):
        python_data.BatchChecker(
            python_data.standardize((words, (np.array([None, 1], dtype=object),))), "x", raised
        )


def test_the_static_batch_is_the_requested_one_else_the_largest_batch_read_ahead():
    peeked = [python_data.standardize(np.zeros((rows, 2))) for rows in (6, 8)]
    request = InfeedRequest(Mode.TRAIN, Layout.PADDED)
    assert python_data.static_batch_size(request, peeked, 1) == 8
    assert python_data.static_batch_size(request, peeked[:1], 2) == 6
    requested = dataclasses.replace(request, batch_size=12)
    assert python_data.static_batch_size(requested, peeked, 4) == 12
    with pytest.raises(tpufit.InvalidArgumentError, match="4 replicas"):
        python_data.static_batch_size(request, peeked[:1], 4)
