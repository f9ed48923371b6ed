"""pandas inputs: DataFrames and Series become the numpy arrays Keras would make of them.

As Keras's array adapter does, a DataFrame becomes one `[rows, columns]`
array and a Series a `[rows]` array; dicts and lists of them (multi-input
models with one input per column) keep their structure. Text columns (pandas
`str` / `string` dtypes, or objects that are all strings) become arrays of
Python strings, which reach the model as `tf.string`, for models that take
strings (`StringLookup`, `TextVectorization`). pandas is optional: nothing
here imports it, values are recognised by their type's module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tpufit import errors

NUMBERS, TEXT, OTHER = "numbers", "text", "other"


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


def _kind(column: Any) -> str:
    """What a column (a Series) holds: numbers, text, or something else."""
    if _is_numeric(column.dtype):
        return NUMBERS
    if type(column.dtype).__name__ == "StringDtype":
        return TEXT
    if column.dtype == object and all(isinstance(v, (str, bytes)) for v in column.dropna()):
        return TEXT
    return OTHER


def _columns(value: Any) -> dict:
    if type(value).__name__ == "DataFrame":
        return dict(value.items())
    return {value.name if value.name is not None else "(unnamed series)": value}


def _listed(columns: list) -> str:
    return ", ".join(repr(column) for column in columns)


def _refuse(name: str, value: Any, what: str, expected: str) -> errors.InvalidArgumentError:
    received = f"a {type(value).__name__} of {len(_columns(value))} columns"
    return errors.invalid_argument(name, received, expected, what=f"`{name}` {what}")


def _check_columns(name: str, value: Any, columns: dict, kinds: dict) -> None:
    other = [f"{c!r} ({columns[c].dtype})" for c, kind in kinds.items() if kind == OTHER]
    if other:
        raise _refuse(
            name,
            value,
            f"has columns of neither numbers nor text: {', '.join(other)}",
            "numbers or text only: encode the others first (e.g. `pd.get_dummies`, "
            "`.cat.codes`, or `.astype(str)` for a string input), or drop them",
        )
    text = [c for c, kind in kinds.items() if kind == TEXT]
    if text and len(text) < len(kinds):
        raise _refuse(
            name,
            value,
            f"mixes text columns {_listed(text)} with numeric ones",
            "one kind of column per array: pass a dict of columns instead, one model "
            "input each (e.g. `dict(df)`), or drop the text columns",
        )
    missing = [c for c in text if columns[c].isna().any()]
    if missing:
        raise _refuse(
            name,
            value,
            f"has text columns with missing values: {_listed(missing)}",
            'a string in every row: fill the gaps first (e.g. `.fillna("")`)',
        )


def _to_array(value: Any, name: str) -> np.ndarray:
    columns = _columns(value)
    kinds = {column: _kind(series) for column, series in columns.items()}
    _check_columns(name, value, columns, kinds)
    if TEXT in kinds.values():
        return value.to_numpy(dtype=object)
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
        InvalidArgumentError: A DataFrame or Series has columns of neither
            numbers nor text, mixes the two, or has text with missing values
            (the message names the columns).
    """
    if is_pandas(value):
        return _to_array(value, name)
    if isinstance(value, dict):
        return {key: to_arrays(item, f"{name}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        converted = [to_arrays(item, f"{name}[{i}]") for i, item in enumerate(value)]
        return _rebuilt(value, converted) if isinstance(value, tuple) else converted
    return value


def _rebuilt(value: tuple, items: list) -> tuple:
    """A tuple of `value`'s type holding `items`: a namedtuple takes them as its fields."""
    if hasattr(value, "_fields"):
        return type(value)(*items)
    return type(value)(items)
