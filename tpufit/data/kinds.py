"""What kind of input `x` is: the one key `build_infeed` dispatches on."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tpufit.data import input_fns, python_data

ARRAYS = "arrays"
DATASET = "dataset"
GENERATOR = "generator"
PY_DATASET = "py_dataset"
INPUT_FN = "input_fn"
DISTRIBUTED = "distributed_dataset"


def kind_of(x: Any) -> str:
    """Names the kind of `x`: one of the names above.

    Anything not recognised as one of the others is arrays (numpy, pandas,
    nested lists / dicts of them): the arrays adapter says what is wrong with it.
    """
    if isinstance(x, tf.data.Dataset):
        return DATASET
    if isinstance(x, tf.distribute.DistributedDataset):
        return DISTRIBUTED
    if python_data.is_py_dataset(x):
        return PY_DATASET
    if python_data.is_generator(x):
        return GENERATOR
    if input_fns.is_input_fn(x):
        return INPUT_FN
    return ARRAYS
