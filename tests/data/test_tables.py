"""pandas DataFrames and Series become the numpy arrays Keras would make of them."""

from __future__ import annotations

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


def test_non_numeric_columns_are_named_in_the_error():
    table = pd.DataFrame(
        {"ok": [1.0, 2.0], "city": ["Oslo", "Rome"], "kind": pd.Categorical(["a", "b"])}
    )
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tables.to_arrays({"features": table}, "x")
    message = str(raised.value)
    assert "x['features']" in message and "'city'" in message and "'kind'" in message
    assert "'ok'" not in message
    with pytest.raises(tpufit.InvalidArgumentError, match="'name'"):
        tables.to_arrays(pd.Series(["a"], name="name"), "y")
