"""pandas DataFrames and Series become the numpy arrays Keras would make of them."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pytest

import tpufit
from tpufit.data import tables


def test_dataframe_becomes_one_array_and_series_a_column():
    table = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "flag": [True, False, True]})
    array = tables.to_arrays(table, "x")
    assert array.shape == (3, 3)
    np.testing.assert_array_equal(array[:, 1], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(tables.to_arrays(table["a"], "y"), [1, 2, 3])


def test_dicts_and_lists_of_columns_keep_their_structure():
    table = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]})
    converted = tables.to_arrays({"a": table["a"], "rest": [table[["b"]], np.ones(2)]}, "x")
    assert isinstance(converted["a"], np.ndarray) and converted["a"].shape == (2,)
    assert converted["rest"][0].shape == (2, 1)
    assert isinstance(converted["rest"], list)
    np.testing.assert_array_equal(converted["rest"][1], np.ones(2))
    plain = {"a": [1]}
    assert tables.to_arrays(plain, "x") == plain  # nothing of pandas: unchanged


def test_nullable_columns_with_missing_values_become_nan():
    table = pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")})
    array = tables.to_arrays(table, "x")
    assert array.dtype == np.float64 and np.isnan(array[1, 0])


def test_columns_of_neither_numbers_nor_text_are_named_in_the_error():
    table = pd.DataFrame(
        {
            "ok": [1.0, 2.0],
            "day": pd.to_datetime(["2024-01-01"] * 2),
            "kind": pd.Categorical(["a", "b"]),
        }
    )
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tables.to_arrays({"features": table}, "x")
    message = str(raised.value)
    assert "x['features']" in message and "'day'" in message and "'kind'" in message
    assert "'ok'" not in message and ".astype(str)" in message


@pytest.mark.parametrize("dtype", [object, "string", "str"])
def test_text_columns_become_arrays_of_python_strings(dtype):
    table = pd.DataFrame({"city": ["Oslo", "Rome", "Lima"], "code": ["a", "b", "c"]}, dtype=dtype)
    array = tables.to_arrays(table, "x")
    assert array.dtype == object and array.shape == (3, 2)
    assert array.tolist() == [["Oslo", "a"], ["Rome", "b"], ["Lima", "c"]]
    column = tables.to_arrays(table["city"], "x")
    assert column.dtype == object and column.tolist() == ["Oslo", "Rome", "Lima"]


def test_a_dict_of_columns_may_mix_text_and_numbers():
    table = pd.DataFrame({"age": [31, 42], "city": ["Oslo", "Rome"]})
    converted = tables.to_arrays(dict(table), "x")
    assert converted["age"].dtype == np.int64 and converted["city"].tolist() == ["Oslo", "Rome"]


def test_one_array_of_text_and_numeric_columns_is_an_error_suggesting_a_dict():
    table = pd.DataFrame({"age": [31, 42], "city": ["Oslo", "Rome"]})
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tables.to_arrays(table, "x")
    message = str(raised.value)
    assert "mixes text columns 'city' with numeric ones" in message and "dict(df)" in message


@pytest.mark.parametrize("missing", [None, np.nan])
def test_text_with_missing_values_is_an_error_naming_the_column(missing):
    table = pd.DataFrame({"city": ["Oslo", missing]})
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tables.to_arrays(table, "x")
    assert "missing values: 'city'" in str(raised.value) and "fillna" in str(raised.value)


def test_namedtuples_keep_their_type_and_fields():
    Pair = collections.namedtuple("Pair", ["first", "second"])
    converted = tables.to_arrays(Pair(pd.Series([1.0, 2.0]), (np.ones(2),)), "y")
    assert type(converted) is Pair and isinstance(converted.first, np.ndarray)
    assert type(converted.second) is tuple
