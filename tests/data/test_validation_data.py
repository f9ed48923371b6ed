"""tpufit/data/validation_data.py: `validation_data` unpacked, `validation_split` held out."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data

import tpufit
from tpufit.data import split_for_validation, unpack_validation_data


def test_arrays_take_the_batch_size_and_other_inputs_keep_their_batches():
    x, y = tiny_data(8)
    assert unpack_validation_data((x, y), 4)[2:] == (None, 4)
    weights = np.ones(8)
    assert unpack_validation_data([x, y, weights], None)[2] is weights
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    assert unpack_validation_data(dataset, 4) == (dataset, None, None, None)
    with pytest.raises(tpufit.InvalidArgumentError, match="validation_data"):
        unpack_validation_data((x,), 4)


def test_the_split_holds_out_the_last_rows_of_every_array():
    x, y = tiny_data(10)
    head_x, head_y, head_w, (tail_x, tail_y, tail_w) = split_for_validation(x, y, None, 0.2, None)
    np.testing.assert_array_equal(head_x, x[:8])
    np.testing.assert_array_equal(tail_y, y[8:])
    assert head_w is None and tail_w is None and len(head_y) == 8 and len(tail_x) == 2
    with pytest.raises(tpufit.InvalidArgumentError, match="validation_split"):
        split_for_validation(x, y, None, 0.2, (x, y))
    with pytest.raises(tpufit.InvalidArgumentError, match="validation_split"):
        split_for_validation(x, y, None, 1.5, None)
