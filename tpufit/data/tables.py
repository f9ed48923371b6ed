"""pandas inputs: DataFrames and Series become the numpy arrays Keras would make of them.

As Keras's array adapter does, a DataFrame becomes one `[rows, columns]`
array and a Series a `[rows]` array; dicts and lists of them (multi-input
models with one input per column) keep their structure. pandas is optional:
nothing here imports it, values are recognised by their type's module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tpufit import errors


def is_pandas(value: Any) -> bool:
    """Whether `value` is a pandas DataFrame or Series."""
    module = type(value).__module__ or ""
    return module.startswith("pandas") and type(value).__name__ in ("DataFrame", "Series")


def _is_numeric(dtype: Any) -> bool:
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        # pandas extension dtypes (nullable Int64, boolean, Float32) know their numpy kind.
        kind = getattr(dtype, "kind", "O")
    return kind in "biuf"


def _to_array(value: Any, name: str) -> np.ndarray:
    if type(value).__name__ == "DataFrame":
        columns = dict(value.dtypes.items())
    else:
        columns = {value.name if value.name is not None else "(unnamed series)": value.dtype}
    bad = {column: dtype for column, dtype in columns.items() if not _is_numeric(dtype)}
    if bad:
        listed = ", ".join(f"{column!r} ({dtype})" for column, dtype in bad.items())
        raise errors.invalid_argument(
            name,
            f"a {type(value).__name__} with non-numeric columns {listed}",
            "numeric columns only: encode them first (e.g. `pd.get_dummies`, "
            "`.astype('category').cat.codes`, or a Keras preprocessing layer), or drop them",
            what=f"`{name}` has non-numeric columns: {listed}",
        )
    array = value.to_numpy()
    if array.dtype == object:
        # Nullable pandas dtypes with missing values come out as objects.
        array = value.to_numpy(dtype=np.float64, na_value=np.nan)
    return array


def to_arrays(value: Any, name: str) -> Any:
    """Returns `value` with every DataFrame / Series (also inside dicts, lists, tuples) as numpy.

    Args:
        value: `x`, `y` or `sample_weight` as the user passed it.
        name: The argument's name, for error messages.

    Raises:
        InvalidArgumentError: A DataFrame or Series has non-numeric columns
            (the message names them).
    """
    if is_pandas(value):
        return _to_array(value, name)
    if isinstance(value, dict):
        return {key: to_arrays(item, f"{name}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        converted = [to_arrays(item, f"{name}[{i}]") for i, item in enumerate(value)]
        return type(value)(converted) if isinstance(value, tuple) else converted
    return value

