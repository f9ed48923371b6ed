"""tpufit/data/array_rows.py: batches of rows taken out of in-memory arrays, small or large."""

from __future__ import annotations

from unittest import mock

import numpy as np
import tensorflow as tf
from conftest import row_id_data, take_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from tpufit.config import Layout, Mode
from tpufit.data import array_rows, infeed

PIPELINES = settings(max_examples=25, deadline=None)
ROWS_AND_BATCH = dict(rows=st.integers(1, 300), batch=st.integers(1, 64))


# --- array paths: small data gathered once, larger data gathered per batch on the host ---


@PIPELINES
@given(**ROWS_AND_BATCH, mode=st.sampled_from(Mode), layout=st.sampled_from(Layout))
def test_small_arrays_and_host_gathered_arrays_give_the_same_stream(rows, batch, mode, layout):
    data = row_id_data(rows)

    def stream(small_bytes):
        with mock.patch.object(array_rows, "SMALL_BYTES", small_bytes):
            feed = infeed.from_arrays(data, batch, mode=mode, layout=layout)
        count = (feed.steps_per_pass or 0) + 2
        tail = take_numpy(feed.tail, 2) if feed.tail is not None else []
        return feed, take_numpy(feed.dataset, count) + tail

    small_feed, small = stream(array_rows.SMALL_BYTES)
    host_feed, host = stream(0)
    assert small_feed.steps_per_pass == host_feed.steps_per_pass
    assert small_feed.rows == host_feed.rows == rows
    assert len(small) == len(host)
    for a, b in zip(small, host, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def test_row_taker_takes_numeric_rows_on_the_host_and_strings_as_tensors():
    numbers = (np.arange(12.0).reshape(6, 2), np.arange(6))
    rows = tf.constant([4, 0, 4], tf.int64)
    x, y = array_rows.row_taker(numbers)(rows)
    np.testing.assert_array_equal(x.numpy(), numbers[0][[4, 0, 4]])
    np.testing.assert_array_equal(y.numpy(), [4, 0, 4])
    words = np.array(["a", "b", "c"])
    taken = array_rows.row_taker(words)(tf.constant([2, 1], tf.int64))
    assert taken.numpy().tolist() == [b"c", b"b"]


def test_only_small_arrays_count_as_small():
    assert array_rows.small((np.zeros((10, 6)), np.zeros(10)))
    assert not array_rows.small(np.zeros((array_rows.SMALL_BYTES // 8 + 1,)))
