"""tpufit/data/infeed.py: arrays and batched datasets to static-shape batches with signals.

Rows are identified by their label column: `y = arange(rows)`, so the tests can
tell which row of the input each batch row holds.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    FEATURES,
    check_rows_match_ids,
    check_static_batch,
    id_dataset,
    real_ids,
    row_id_data,
    take_numpy,
    tiny_data,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import dataset_stream, infeed

PIPELINES = settings(max_examples=25, deadline=None)
ROWS_AND_BATCH = dict(rows=st.integers(1, 300), batch=st.integers(1, 64))


# --- pack_arrays -----------------------------------------------------------------


def test_pack_arrays_builds_keras_data_tuples():
    x, y = tiny_data(4)
    weights = np.ones(4)
    assert isinstance(infeed.pack_arrays(x), np.ndarray)
    assert len(infeed.pack_arrays(x, y)) == 2
    packed = infeed.pack_arrays(x, y, weights)
    assert len(packed) == 3
    np.testing.assert_array_equal(packed[1], y)


def test_pack_arrays_turns_lists_into_tuples_and_keeps_dicts():
    a = np.zeros((3, 2))
    b = np.ones((3, 4))
    (x,) = infeed.pack_arrays([a, b])
    assert isinstance(x, tuple) and len(x) == 2
    assert x[1].shape == (3, 4)
    (x, y) = infeed.pack_arrays({"a": a, "b": [b, b]}, [np.arange(3)])
    assert isinstance(x, dict) and set(x) == {"a", "b"}
    assert isinstance(x["b"], tuple) and len(x["b"]) == 2
    assert isinstance(y, tuple)


def test_pack_arrays_casts_floats_to_floatx_and_keeps_ints():
    x = np.linspace(0, 1, 6, dtype=np.float64).reshape(3, 2)
    y = np.arange(3, dtype=np.int64)
    packed_x, packed_y = infeed.pack_arrays({"f": x, "half": x.astype("float16")}, y)
    assert packed_x["f"].dtype == np.dtype(keras.config.floatx()) == np.float32
    assert packed_x["half"].dtype == np.float32
    assert packed_y.dtype == np.int64
    np.testing.assert_allclose(packed_x["f"], x, rtol=1e-7)


def test_pack_arrays_converts_nested_python_numbers_to_arrays():
    x = infeed.pack_arrays({"a": np.array([[1.5], [2.5]])})
    assert isinstance(x["a"], np.ndarray)


def test_pack_arrays_of_x_alone_matches_keras_packing():
    x, _ = tiny_data(4)
    (packed,) = tf.nest.flatten(infeed.pack_arrays(x))
    keras_packed = keras.utils.pack_x_y_sample_weight(x)
    assert type(infeed.pack_arrays(x)) is type(keras_packed)
    np.testing.assert_array_equal(packed, keras_packed)


def test_sample_weight_without_y_works_or_raises_a_tpufit_error():
    x, _ = tiny_data(5)
    try:
        data = infeed.pack_arrays(x, sample_weight=np.ones(5))
    except tpufit.TPUFitError as error:
        assert "sample_weight" in str(error)
        return
    feed = infeed.from_arrays(data, 2, mode=Mode.EVAL, layout=Layout.PADDED)
    take_numpy(feed.dataset, 1)


# --- from_arrays: padded, one pass (evaluate / predict) ---------------------------


@PIPELINES
@given(**ROWS_AND_BATCH)
def test_padded_pass_yields_every_row_once_in_order_then_stops(rows, batch):
    data = row_id_data(rows)
    feed = infeed.from_arrays(data, batch, mode=Mode.EVAL, layout=Layout.PADDED)
    steps = math.ceil(rows / batch)
    assert feed.steps_per_pass == steps
    assert feed.batch_size == batch
    assert feed.tail is None
    elements = take_numpy(feed.dataset, steps + 3)
    assert len(elements) == steps + 3
    for element in elements:
        check_static_batch(element, batch)
    real, stops = elements[:steps], elements[steps:]
    np.testing.assert_array_equal(real_ids(real), np.arange(rows))
    check_rows_match_ids(real, data[0])
    for (_, ids), signals in real:
        assert not signals["stop"].any()
        real_count = int(signals["mask"].sum())
        # Real rows first; padding rows are copies of this batch's real rows.
        assert signals["mask"][:real_count].all()
        assert set(ids[real_count:]) <= set(ids[:real_count])
        np.testing.assert_array_equal(signals["real_rows"], real_count)
    for _, signals in stops:
        assert signals["stop"].all()
        assert not signals["mask"].any()


def test_padded_pass_keeps_stopping_forever():
    feed = infeed.from_arrays(row_id_data(5), 4, mode=Mode.EVAL, layout=Layout.PADDED)
    elements = take_numpy(feed.dataset, 12)
    assert [bool(s["stop"].all()) for _, s in elements] == [False] * 2 + [True] * 10


def test_padded_pass_of_a_multiple_of_the_batch_has_no_padding():
    feed = infeed.from_arrays(row_id_data(12), 4, mode=Mode.EVAL, layout=Layout.PADDED)
    assert feed.steps_per_pass == 3
    elements = take_numpy(feed.dataset, 3)
    assert all(signals["mask"].all() for _, signals in elements)


def test_padded_pass_batches_nested_dict_inputs():
    x, _ = tiny_data(5)
    data = infeed.pack_arrays({"a": x, "b": [x[:, :2], x[:, 2:]]}, np.arange(5))
    feed = infeed.from_arrays(data, 4, mode=Mode.EVAL, layout=Layout.PADDED)
    (first_x, first_y), _ = take_numpy(feed.dataset, 1)[0]
    assert set(first_x) == {"a", "b"} and isinstance(first_x["b"], tuple)
    assert first_x["a"].shape == (4, FEATURES)
    assert first_x["b"][1].shape == (4, FEATURES - 2)
    np.testing.assert_array_equal(first_x["a"], x[:4])


# --- from_arrays: padded, endless (train) ----------------------------------------


def _passes(feed, passes: int) -> list[list]:
    steps = feed.steps_per_pass
    elements = take_numpy(feed.dataset, steps * passes)
    return [elements[i * steps : (i + 1) * steps] for i in range(passes)]


@PIPELINES
@given(**ROWS_AND_BATCH, seed=st.integers(0, 2**31 - 1))
def test_endless_padded_stream_has_every_row_once_per_pass(rows, batch, seed):
    data = row_id_data(rows)
    feed = infeed.from_arrays(data, batch, mode=Mode.TRAIN, layout=Layout.PADDED, shuffle_seed=seed)
    assert feed.steps_per_pass == math.ceil(rows / batch)
    for elements in _passes(feed, 2):
        ids = real_ids(elements)
        np.testing.assert_array_equal(np.sort(ids), np.arange(rows))
        check_rows_match_ids(elements, data[0])
        for element in elements:
            check_static_batch(element, batch)
            assert not element[1]["stop"].any()
        # Only the last batch of a pass may be short.
        masks = [signals["mask"].sum() for _, signals in elements]
        assert masks[:-1] == [batch] * (len(masks) - 1)


def test_endless_stream_reshuffles_each_pass_with_a_seed():
    feed = infeed.from_arrays(
        row_id_data(100), 16, mode=Mode.TRAIN, layout=Layout.PADDED, shuffle_seed=3
    )
    orders = [real_ids(elements) for elements in _passes(feed, 3)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(100))
        assert not np.array_equal(order, np.arange(100))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])


def test_endless_stream_order_depends_only_on_the_seed():
    def orders(seed):
        feed = infeed.from_arrays(
            row_id_data(50), 8, mode=Mode.TRAIN, layout=Layout.PADDED, shuffle_seed=seed
        )
        return [real_ids(elements) for elements in _passes(feed, 2)]

    first, again, other = orders(11), orders(11), orders(12)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_endless_stream_without_seed_keeps_input_order_every_pass():
    feed = infeed.from_arrays(row_id_data(10), 4, mode=Mode.TRAIN, layout=Layout.PADDED)
    assert feed.steps_per_pass == 3
    for elements in _passes(feed, 3):
        np.testing.assert_array_equal(real_ids(elements), np.arange(10))


# --- from_arrays: drop_remainder --------------------------------------------------


@PIPELINES
@given(**ROWS_AND_BATCH, seed=st.one_of(st.none(), st.integers(0, 1000)))
def test_drop_remainder_yields_only_full_batches(rows, batch, seed):
    feed = infeed.from_arrays(
        row_id_data(rows),
        batch,
        mode=Mode.TRAIN,
        layout=Layout.PADDED,
        shuffle_seed=seed,
        drop_remainder=True,
    )
    assert feed.steps_per_pass == rows // batch
    assert feed.tail is None
    if rows < batch:
        return
    for elements in _passes(feed, 2):
        ids = real_ids(elements)
        assert len(ids) == len(set(ids)) == (rows // batch) * batch
        for _, signals in elements:
            assert signals["mask"].all()
            assert not signals["stop"].any()


# --- from_arrays: unpadded (models with their own steps) -------------------------


def test_unpadded_stream_gives_full_batches_and_the_remainder_as_tail():
    data = row_id_data(10)
    feed = infeed.from_arrays(data, 4, mode=Mode.TRAIN, layout=Layout.TRUE_SIZE, shuffle_seed=5)
    assert feed.steps_per_pass == 2
    assert feed.tail is not None
    main = _passes(feed, 3)
    tails = take_numpy(feed.tail, 3)
    orders = []
    for elements, tail in zip(main, tails, strict=True):
        for element in elements:
            check_static_batch(element, 4)
            assert element[1]["mask"].all()
        (tail_x, tail_ids), tail_signals = tail
        assert tail_ids.shape == (2,)
        assert tail_signals["mask"].tolist() == [1.0, 1.0]
        np.testing.assert_array_equal(tail_x, data[0][tail_ids])
        # The pass's full batches and its tail hold every row exactly once.
        all_ids = np.concatenate([real_ids(elements), tail_ids])
        np.testing.assert_array_equal(np.sort(all_ids), np.arange(10))
        orders.append(all_ids)
    # Reshuffled each pass, the tail included.
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])


@pytest.mark.parametrize("mode", [Mode.TRAIN, Mode.EVAL])
def test_unpadded_full_batches_have_a_static_batch_dimension(mode):
    feed = infeed.from_arrays(row_id_data(10), 4, mode=mode, layout=Layout.TRUE_SIZE)
    for spec in tf.nest.flatten(feed.dataset.element_spec):
        assert spec.shape[0] == 4


def test_unpadded_one_pass_gives_full_batches_then_stops_and_one_tail():
    feed = infeed.from_arrays(row_id_data(10), 4, mode=Mode.EVAL, layout=Layout.TRUE_SIZE)
    elements = take_numpy(feed.dataset, 4)
    np.testing.assert_array_equal(real_ids(elements[:2]), np.arange(8))
    assert [bool(s["stop"].all()) for _, s in elements] == [False, False, True, True]
    tails = take_numpy(feed.tail, 5)
    assert len(tails) == 1
    np.testing.assert_array_equal(tails[0][0][1], [8, 9])


def test_unpadded_stream_of_a_multiple_of_the_batch_has_no_tail():
    feed = infeed.from_arrays(row_id_data(8), 4, mode=Mode.TRAIN, layout=Layout.TRUE_SIZE)
    assert feed.tail is None
    assert feed.steps_per_pass == 2
    np.testing.assert_array_equal(real_ids(take_numpy(feed.dataset, 2)), np.arange(8))


@pytest.mark.parametrize("mode", [Mode.TRAIN, Mode.EVAL])
def test_unpadded_stream_with_fewer_rows_than_the_batch_is_all_tail(mode):
    data = row_id_data(3)
    feed = infeed.from_arrays(data, 8, mode=mode, layout=Layout.TRUE_SIZE, shuffle_seed=1)
    assert feed.steps_per_pass == 0
    tails = take_numpy(feed.tail, 2)
    assert len(tails) == (2 if mode == Mode.TRAIN else 1)
    for (tail_x, tail_ids), signals in tails:
        np.testing.assert_array_equal(np.sort(tail_ids), np.arange(3))
        np.testing.assert_array_equal(tail_x, data[0][tail_ids])
        assert signals["mask"].tolist() == [1.0] * 3


# --- what an infeed carries -----------------------------------------------------------


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("layout", list(Layout))
def test_an_infeed_carries_the_mode_and_layout_it_was_built_for(mode, layout):
    arrays = infeed.from_arrays(row_id_data(10), 4, mode=mode, layout=layout)
    dataset = dataset_stream.from_dataset(id_dataset(10, 4), mode=mode, layout=layout)
    for feed in (arrays, dataset):
        assert (feed.mode, feed.layout) == (mode, layout)
        assert feed.pipeline_errors == []


def test_skipping_resumes_the_stream_and_the_tail_past_the_batches_already_run():
    feed = infeed.from_arrays(row_id_data(10), 4, mode=Mode.TRAIN, layout=Layout.TRUE_SIZE)
    resumed = feed.skipping(3, 1)
    assert (resumed.batch_size, resumed.steps_per_pass) == (feed.batch_size, feed.steps_per_pass)
    expected = take_numpy(feed.dataset, 5)[3:]
    for a, b in zip(take_numpy(resumed.dataset, 2), expected, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    tails, resumed_tails = take_numpy(feed.tail, 3), take_numpy(resumed.tail, 2)
    for a, b in zip(resumed_tails, tails[1:], strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def test_skipping_nothing_keeps_the_streams_and_an_infeed_without_tail_has_none():
    feed = infeed.from_arrays(row_id_data(8), 4, mode=Mode.TRAIN, layout=Layout.PADDED)
    assert feed.skipping(0, 0).dataset is feed.dataset
    assert feed.skipping(2, 1).tail is None


def test_as_input_array_casts_floats_to_floatx_and_keeps_other_dtypes():
    assert infeed.as_input_array([0.5, 1.5]).dtype == np.dtype(keras.config.floatx())
    assert infeed.as_input_array(np.zeros(2, "float16")).dtype == np.float32
    assert infeed.as_input_array(np.arange(3)).dtype == np.arange(3).dtype
    assert infeed.as_input_array(np.array(["a"])).dtype.kind == "U"
