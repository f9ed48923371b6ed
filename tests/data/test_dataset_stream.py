"""Tests of `tpufit.data.dataset_stream`: the infeed of a batched `tf.data.Dataset`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    FEATURES,
    check_rows_match_ids,
    check_static_batch,
    id_dataset,
    real_ids,
    take_numpy,
    tiny_data,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import dataset_stream

PIPELINES = settings(max_examples=25, deadline=None)
ROWS_AND_BATCH = dict(rows=st.integers(1, 300), batch=st.integers(1, 64))


@PIPELINES
@given(**ROWS_AND_BATCH)
def test_dataset_with_a_partial_last_batch_is_padded_to_static_batches(rows, batch):
    x, _ = tiny_data(rows)
    feed = dataset_stream.from_dataset(
        id_dataset(rows, batch), mode=Mode.EVAL, layout=Layout.PADDED
    )
    steps = math.ceil(rows / batch)
    # The static size is the dataset's first batch: `batch`, or every row when
    # the only batch is the short one.
    batch = min(batch, rows)
    assert feed.batch_size == batch
    for spec in tf.nest.flatten(feed.dataset.element_spec):
        assert spec.shape[0] == batch
    elements = take_numpy(feed.dataset, steps + 2)
    real, stops = elements[:steps], elements[steps:]
    np.testing.assert_array_equal(real_ids(real), np.arange(rows))
    check_rows_match_ids(real, x)
    for (_, ids), signals in real:
        assert not signals["stop"].any()
        real_count = int(signals["mask"].sum())
        assert set(ids[real_count:]) <= set(ids[:real_count])
    for _, signals in stops:
        assert signals["stop"].all() and not signals["mask"].any()


def test_dataset_shorter_than_the_given_batch_size_is_padded_to_it():
    x, _ = tiny_data(3)
    feed = dataset_stream.from_dataset(
        id_dataset(3, 8), mode=Mode.EVAL, layout=Layout.PADDED, batch_size=8
    )
    assert feed.batch_size == 8
    elements = take_numpy(feed.dataset, 2)
    check_static_batch(elements[0], 8)
    assert elements[0][1]["mask"].tolist() == [1.0] * 3 + [0.0] * 5
    check_rows_match_ids(elements[:1], x)
    assert elements[1][1]["stop"].all()


def test_dataset_with_static_batches_keeps_its_known_length():
    x, _ = tiny_data(12)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(12))).batch(4, drop_remainder=True)
    feed = dataset_stream.from_dataset(dataset, mode=Mode.EVAL, layout=Layout.PADDED)
    assert feed.steps_per_pass == 3
    np.testing.assert_array_equal(real_ids(take_numpy(feed.dataset, 3)), np.arange(12))


def test_one_pass_dataset_of_known_length_with_partial_batch_reports_its_steps():
    dataset = id_dataset(10, 4)
    assert int(dataset.cardinality()) == 3
    feed = dataset_stream.from_dataset(dataset, mode=Mode.EVAL, layout=Layout.PADDED)
    assert feed.steps_per_pass == 3


def test_dataset_of_unknown_length_has_no_step_count_in_one_pass_mode():
    dataset = id_dataset(20, 1).unbatch().filter(lambda x, i: i % 2 == 0).batch(4)
    assert int(dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    feed = dataset_stream.from_dataset(dataset, mode=Mode.EVAL, layout=Layout.PADDED)
    assert feed.steps_per_pass is None
    elements = take_numpy(feed.dataset, 5)
    np.testing.assert_array_equal(real_ids(elements[:3]), np.arange(0, 20, 2))
    assert [bool(s["stop"].all()) for _, s in elements] == [False] * 3 + [True] * 2


def test_dataset_of_unknown_length_is_counted_in_endless_mode():
    dataset = id_dataset(20, 1).unbatch().filter(lambda x, i: i % 2 == 0).batch(4)
    feed = dataset_stream.from_dataset(dataset, mode=Mode.TRAIN, layout=Layout.PADDED)
    assert feed.steps_per_pass == 3  # 10 rows at 4: 4, 4, 2 (padded)
    elements = take_numpy(feed.dataset, 6)
    for epoch in (elements[:3], elements[3:]):
        np.testing.assert_array_equal(real_ids(epoch), np.arange(0, 20, 2))
    assert not any(s["stop"].any() for _, s in elements)


def test_endless_dataset_re_cut_to_a_batch_size_stays_endless_and_is_not_counted():
    # `rebatch` alone reports an unknown length, which training would count forever.
    dataset = id_dataset(10, 3).repeat()
    feed = dataset_stream.from_dataset(dataset, mode=Mode.TRAIN, layout=Layout.PADDED, batch_size=4)
    assert feed.steps_per_pass is None
    elements = take_numpy(feed.dataset, 3)
    np.testing.assert_array_equal(real_ids(elements), [*range(10), 0, 1])


def test_variable_size_batches_are_rebatched_to_the_static_size():
    x, _ = tiny_data(10)
    ids = np.arange(10)
    sizes = [(0, 3), (3, 8), (8, 10)]  # batches of 3, 5 and 2 rows
    dataset = None
    for start, stop in sizes:
        part = tf.data.Dataset.from_tensors((x[start:stop], ids[start:stop]))
        dataset = part if dataset is None else dataset.concatenate(part)
    feed = dataset_stream.from_dataset(dataset, mode=Mode.EVAL, layout=Layout.PADDED, batch_size=4)
    assert feed.batch_size == 4
    elements = take_numpy(feed.dataset, 4)
    for element in elements:
        check_static_batch(element, 4)
    assert [int(s["mask"].sum()) for _, s in elements] == [4, 4, 2, 0]
    np.testing.assert_array_equal(real_ids(elements[:3]), ids)
    check_rows_match_ids(elements[:3], x)
    assert elements[3][1]["stop"].all()


def test_dataset_of_dicts_keeps_its_structure_when_padded():
    x, _ = tiny_data(5)
    dataset = tf.data.Dataset.from_tensor_slices(({"features": x}, np.arange(5))).batch(2)
    feed = dataset_stream.from_dataset(dataset, mode=Mode.EVAL, layout=Layout.PADDED)
    elements = take_numpy(feed.dataset, 3)
    (last_x, last_ids), signals = elements[2]
    assert set(last_x) == {"features"}
    assert last_x["features"].shape == (2, FEATURES)
    assert signals["mask"].tolist() == [1.0, 0.0]
    np.testing.assert_array_equal(last_ids, [4, 4])


def test_unpadded_dataset_passes_batches_through_as_they_are():
    x, _ = tiny_data(10)
    feed = dataset_stream.from_dataset(id_dataset(10, 4), mode=Mode.EVAL, layout=Layout.TRUE_SIZE)
    elements = take_numpy(feed.dataset, 5)
    sizes = [len(ids) for (_, ids), _ in elements[:3]]
    assert sizes == [4, 4, 2]
    for (bx, ids), signals in elements[:3]:
        assert signals["mask"].tolist() == [1.0] * len(ids)
        assert not signals["stop"].any()
        np.testing.assert_array_equal(bx, x[ids])
    np.testing.assert_array_equal(real_ids(elements[:3]), np.arange(10))
    for _, signals in elements[3:]:
        assert signals["stop"].all()


def test_unpadded_endless_dataset_repeats_with_its_length():
    feed = dataset_stream.from_dataset(id_dataset(10, 4), mode=Mode.TRAIN, layout=Layout.TRUE_SIZE)
    assert feed.steps_per_pass == 3
    elements = take_numpy(feed.dataset, 6)
    assert [len(ids) for (_, ids), _ in elements] == [4, 4, 2] * 2


def test_unpadded_dataset_keeps_one_element_tuples():
    x, _ = tiny_data(6)
    dataset = tf.data.Dataset.from_tensor_slices((x,)).batch(3)
    assert isinstance(dataset.element_spec, tuple)
    feed = dataset_stream.from_dataset(dataset, mode=Mode.EVAL, layout=Layout.TRUE_SIZE)
    data_spec = feed.dataset.element_spec[0]
    assert isinstance(data_spec, tuple) and len(data_spec) == 1


# --- dataset helpers -----------------------------------------------------------------


def test_dataset_batch_size_reads_static_or_first_batch():
    assert dataset_stream.dataset_batch_size(tf.data.Dataset.range(10).batch(4, True)) == 4
    assert dataset_stream.dataset_batch_size(tf.data.Dataset.range(10).batch(3)) == 3


def test_empty_dataset_is_a_tpufit_error():
    empty = tf.data.Dataset.range(0).batch(4)
    with pytest.raises(tpufit.InvalidArgumentError, match="x"):
        dataset_stream.dataset_batch_size(empty)


def test_count_batches_counts_unknown_and_gives_none_for_endless():
    assert dataset_stream.count_batches(tf.data.Dataset.range(10).batch(4)) == 3
    filtered = tf.data.Dataset.range(10).filter(lambda v: v < 5).batch(2)
    assert dataset_stream.count_batches(filtered) == 3
    assert dataset_stream.count_batches(tf.data.Dataset.range(3).repeat()) is None


def test_a_batch_larger_than_the_first_fails_with_a_message_naming_batch_size():
    sizes = tf.data.Dataset.from_tensor_slices(np.array([2, 5], np.int64))
    dataset = sizes.map(lambda n: tf.zeros([n, 3]))
    feed = dataset_stream.from_dataset(dataset, mode=Mode.EVAL, layout=Layout.PADDED)
    assert feed.batch_size == 2
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch_size="):
        take_numpy(feed.dataset, 2)
    recut = dataset_stream.from_dataset(dataset, mode=Mode.EVAL, layout=Layout.PADDED, batch_size=4)
    elements = take_numpy(recut.dataset, 2)
    assert [float(np.sum(signals["mask"])) for _, signals in elements] == [4.0, 3.0]
