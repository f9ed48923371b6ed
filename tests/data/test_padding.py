"""tpufit/data/padding.py: batch counts, padding, signals, and collecting the real rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import FEATURES, tiny_data
from hypothesis import given, settings
from hypothesis import strategies as st

from tpufit.data import padding

FAST = settings(max_examples=60, deadline=None)


def _real_and_batch():
    """(real rows, batch size) with 1 <= real rows <= batch size."""
    return st.integers(1, 48).flatmap(
        lambda batch: st.tuples(st.integers(1, batch), st.just(batch))
    )


# --- num_batches -------------------------------------------------------------


def test_num_batches_counts_the_partial_last_batch_unless_dropped():
    assert padding.num_batches(1001, 64) == 16
    assert padding.num_batches(1001, 64, drop_remainder=True) == 15
    assert padding.num_batches(1024, 64) == 16
    assert padding.num_batches(1024, 64, drop_remainder=True) == 16


@FAST
@given(rows=st.integers(0, 100_000), batch_size=st.integers(1, 1024))
def test_num_batches_is_ceil_or_floor_of_rows_over_batch(rows, batch_size):
    padded = padding.num_batches(rows, batch_size)
    dropped = padding.num_batches(rows, batch_size, drop_remainder=True)
    assert padded == math.ceil(rows / batch_size)
    assert dropped == rows // batch_size
    # Enough batches to hold every row, and not one more than needed.
    assert padded * batch_size >= rows > (padded - 1) * batch_size or rows == 0
    assert dropped * batch_size <= rows


# --- fill_positions ----------------------------------------------------------


def test_fill_positions_cycles_through_the_real_rows():
    assert padding.fill_positions(3, 5).numpy().tolist() == [0, 1, 2, 0, 1]
    assert padding.fill_positions(1, 4).numpy().tolist() == [0, 0, 0, 0]
    assert padding.fill_positions(4, 4).numpy().tolist() == [0, 1, 2, 3]


@FAST
@given(sizes=_real_and_batch())
def test_fill_positions_keeps_real_rows_and_fills_only_from_them(sizes):
    real, batch = sizes
    positions = padding.fill_positions(real, batch).numpy()
    assert positions.shape == (batch,)
    np.testing.assert_array_equal(positions[:real], np.arange(real))
    assert np.all((positions >= 0) & (positions < real))


# --- make_signals / stop_signals ---------------------------------------------


@FAST
@given(sizes=_real_and_batch())
def test_make_signals_marks_the_real_prefix(sizes):
    real, batch = sizes
    signals = padding.make_signals(real, batch)
    assert set(signals) == {"mask", "real_rows", "stop"}
    expected_mask = np.r_[np.ones(real), np.zeros(batch - real)]
    np.testing.assert_array_equal(signals["mask"].numpy(), expected_mask)
    np.testing.assert_array_equal(signals["real_rows"].numpy(), np.full(batch, real))
    assert not signals["stop"].numpy().any()
    assert signals["mask"].dtype == tf.float32
    assert signals["real_rows"].dtype == tf.float32
    assert signals["stop"].dtype == tf.bool


def test_make_signals_has_static_shape_when_real_rows_is_a_traced_tensor():
    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
    def signals_of(real):
        signals = padding.make_signals(real, 8)
        for value in signals.values():
            assert value.shape.as_list() == [8]
        return signals

    signals = signals_of(tf.constant(5))
    assert signals["mask"].numpy().tolist() == [1.0] * 5 + [0.0] * 3
    assert signals["real_rows"].numpy().tolist() == [5.0] * 8


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_stop_signals_have_no_real_rows_and_stop_set(batch):
    signals = padding.stop_signals(batch)
    np.testing.assert_array_equal(signals["mask"].numpy(), np.zeros(batch))
    np.testing.assert_array_equal(signals["real_rows"].numpy(), np.zeros(batch))
    np.testing.assert_array_equal(signals["stop"].numpy(), np.ones(batch, bool))
    for value in signals.values():
        assert value.shape.as_list() == [batch]


# --- fill_positions as pad_batch gathers with them -------------------------------


def test_gathering_by_fill_positions_cycles_the_real_indices():
    indices = tf.gather(tf.constant([7, 9]), padding.fill_positions(2, 4))
    assert indices.numpy().tolist() == [7, 9, 7, 9]
    signals = padding.make_signals(2, 4)
    assert signals["mask"].numpy().tolist() == [1.0, 1.0, 0.0, 0.0]
    assert signals["real_rows"].numpy().tolist() == [2.0] * 4


@FAST
@given(sizes=_real_and_batch(), offset=st.integers(0, 1000))
def test_gathering_by_fill_positions_keeps_real_values_first_and_pads_with_them(sizes, offset):
    real, batch = sizes
    real_indices = np.arange(offset, offset + real, dtype=np.int64)[::-1].copy()
    indices = tf.gather(tf.constant(real_indices), padding.fill_positions(real, batch)).numpy()
    assert indices.shape == (batch,)
    np.testing.assert_array_equal(indices[:real], real_indices)
    assert set(indices[real:]) <= set(real_indices)


def test_fill_positions_have_a_static_shape_inside_a_traced_function():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def pad(indices):
        positions = padding.fill_positions(tf.shape(indices)[0], 6)
        assert positions.shape.as_list() == [6]
        return tf.gather(indices, positions)

    assert pad(tf.constant([4, 5], tf.int64)).numpy().tolist() == [4, 5, 4, 5, 4, 5]


# --- pad_batch -----------------------------------------------------------------


def _nested_batch(rows: int) -> dict:
    x, y = tiny_data(rows)
    return {
        "features": tf.constant(x),
        "pair": (tf.constant(y), tf.constant(np.arange(rows, dtype=np.float32))),
        "images": tf.constant(np.arange(rows * 4, dtype=np.float32).reshape(rows, 2, 2)),
    }


def test_pad_batch_leaves_a_full_batch_unchanged():
    batch = _nested_batch(5)
    padded, signals = padding.pad_batch(batch, 5)
    for original, value in zip(tf.nest.flatten(batch), tf.nest.flatten(padded), strict=True):
        np.testing.assert_array_equal(value.numpy(), original.numpy())
    assert signals["mask"].numpy().tolist() == [1.0] * 5
    assert signals["real_rows"].numpy().tolist() == [5.0] * 5
    assert not signals["stop"].numpy().any()


def test_pad_batch_keeps_the_nested_structure():
    padded, _ = padding.pad_batch(_nested_batch(3), 5)
    assert set(padded) == {"features", "pair", "images"}
    assert isinstance(padded["pair"], tuple) and len(padded["pair"]) == 2
    assert padded["features"].shape.as_list() == [5, FEATURES]
    assert padded["images"].shape.as_list() == [5, 2, 2]
    assert padded["pair"][0].dtype == tf.int64


@FAST
@given(sizes=_real_and_batch())
def test_pad_batch_pads_a_short_batch_with_copies_of_its_real_rows(sizes):
    real, batch = sizes
    original = _nested_batch(real)
    padded, signals = padding.pad_batch(original, batch)
    row_ids = padded["pair"][1].numpy().astype(int)
    # Real rows first, in order; every padding row is a copy of a real row.
    np.testing.assert_array_equal(row_ids[:real], np.arange(real))
    assert np.all((row_ids >= 0) & (row_ids < real))
    for key in ("features", "images"):
        np.testing.assert_array_equal(padded[key].numpy(), original[key].numpy()[row_ids])
    np.testing.assert_array_equal(padded["pair"][0].numpy(), original["pair"][0].numpy()[row_ids])
    expected_mask = np.r_[np.ones(real), np.zeros(batch - real)]
    np.testing.assert_array_equal(signals["mask"].numpy(), expected_mask)
    np.testing.assert_array_equal(signals["real_rows"].numpy(), np.full(batch, real))
    assert not signals["stop"].numpy().any()


def test_pad_batch_gives_static_shapes_from_an_unknown_batch_dimension():
    spec = {
        "x": tf.TensorSpec([None, FEATURES], tf.float32),
        "y": (tf.TensorSpec([None], tf.int64),),
    }

    @tf.function(input_signature=[spec])
    def pad(batch):
        padded, signals = padding.pad_batch(batch, 8)
        for value in tf.nest.flatten(padded) + list(signals.values()):
            assert value.shape[0] == 8, value.shape
        assert padded["x"].shape.as_list() == [8, FEATURES]
        return padded, signals

    x, y = tiny_data(3)
    padded, signals = pad({"x": tf.constant(x), "y": (tf.constant(y),)})
    np.testing.assert_array_equal(padded["x"].numpy()[:3], x)
    np.testing.assert_array_equal(padded["x"].numpy()[3:], x[[0, 1, 2, 0, 1]])
    assert signals["mask"].numpy().sum() == 3
    # A full batch goes through the same trace unchanged.
    x8, y8 = tiny_data(8, seed=1)
    padded, signals = pad({"x": tf.constant(x8), "y": (tf.constant(y8),)})
    np.testing.assert_array_equal(padded["x"].numpy(), x8)
    np.testing.assert_array_equal(padded["y"][0].numpy(), y8)
    assert signals["mask"].numpy().sum() == 8


# --- RowCollector -------------------------------------------------------------------


def _collected(outputs, masks, rows_known: bool):
    """The real rows of every loop, as a predict's `RowCollector` gathers them."""
    rows = int(sum(np.count_nonzero(np.asarray(m) > 0.5) for m in masks))
    collector = padding.RowCollector(rows if rows_known else None)
    for part, mask in zip(outputs, masks, strict=True):
        collector.add(part, mask)
    return collector.result()


@pytest.mark.parametrize("rows_known", [True, False])
def test_row_collector_stitches_loops_in_order_and_drops_masked_rows(rows_known):
    outputs = [
        {"logits": np.arange(8).reshape(4, 2), "ids": (np.array([0, 1, 2, 3]),)},
        {"logits": np.arange(8, 16).reshape(4, 2), "ids": (np.array([4, 5, 4, 5]),)},
    ]
    masks = [np.ones(4), np.array([1.0, 1.0, 0.0, 0.0])]
    result = _collected(outputs, masks, rows_known)
    np.testing.assert_array_equal(result["logits"], np.arange(12).reshape(6, 2))
    assert isinstance(result["ids"], tuple)
    np.testing.assert_array_equal(result["ids"][0], np.arange(6))


@pytest.mark.parametrize("rows_known", [True, False])
def test_row_collector_of_one_loop_of_plain_arrays(rows_known):
    result = _collected([np.array([5, 6, 7])], [np.array([1, 1, 0])], rows_known)
    np.testing.assert_array_equal(result, [5, 6])


@FAST
@given(
    loops=st.lists(
        st.integers(1, 12).flatmap(lambda rows: st.tuples(st.just(rows), st.integers(0, rows))),
        min_size=1,
        max_size=6,
    ),
    rows_known=st.booleans(),
)
def test_row_collector_keeps_exactly_the_real_rows_of_every_loop_in_order(loops, rows_known):
    outputs, masks, expected = [], [], []
    next_id = 0
    for rows, real in loops:
        ids = np.arange(next_id, next_id + rows)
        next_id += rows
        outputs.append({"ids": ids, "nested": [ids * 2, ids.reshape(rows, 1)]})
        masks.append(np.r_[np.ones(real), np.zeros(rows - real)].astype(np.float32))
        expected.extend(ids[:real])
    result = _collected(outputs, masks, rows_known)
    np.testing.assert_array_equal(result["ids"], expected)
    np.testing.assert_array_equal(result["nested"][0], np.array(expected) * 2)
    assert result["nested"][1].shape == (len(expected), 1)


# --- nearest_valid_batch_sizes ---------------------------------------------------


def test_nearest_valid_batch_sizes_of_the_issue_example():
    assert padding.nearest_valid_batch_sizes(10, 4) == (8, 12)


@FAST
@given(batch_size=st.integers(1, 10_000), replicas=st.integers(1, 64))
def test_nearest_valid_batch_sizes_are_the_closest_positive_multiples(batch_size, replicas):
    below, above = padding.nearest_valid_batch_sizes(batch_size, replicas)
    assert below % replicas == 0 and above % replicas == 0
    assert below >= replicas  # never 0: a batch needs one row per replica
    assert above >= batch_size
    assert above - batch_size < replicas
    if batch_size >= replicas:
        assert below <= batch_size
        assert batch_size - below < replicas
    if batch_size % replicas == 0:
        assert below == above == batch_size


@pytest.mark.parametrize("rows_known", [True, False])
def test_row_collector_keeps_the_real_rows_of_each_loop_in_order(rows_known):
    loops = [
        ({"a": np.arange(6.0).reshape(3, 2), "b": np.arange(3)}, np.array([1, 1, 1])),
        ({"a": np.arange(6.0, 12.0).reshape(3, 2), "b": np.arange(3, 6)}, np.array([1, 0, 0])),
    ]
    collector = padding.RowCollector(4 if rows_known else None)
    for outputs, mask in loops:
        collector.add(outputs, mask)
    result = collector.result()
    np.testing.assert_array_equal(result["a"], np.arange(8.0).reshape(4, 2))
    np.testing.assert_array_equal(result["b"], [0, 1, 2, 3])


def test_row_collector_with_a_known_count_checks_it():
    collector = padding.RowCollector(5)
    collector.add(np.zeros((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="3 real rows where 5"):
        collector.result()


def test_row_collector_of_a_run_stopped_early_returns_the_rows_it_has():
    collector = padding.RowCollector(5)
    collector.add(np.arange(6.0).reshape(3, 2), np.ones(3))
    np.testing.assert_array_equal(collector.result(complete=False), np.arange(6.0).reshape(3, 2))


@settings(max_examples=60, deadline=None)
@given(replicas=st.sampled_from([1, 2, 3, 4, 8]), share=st.integers(1, 6), data=st.data())
def test_replica_order_gives_each_replica_the_real_rows_a_distributed_dataset_gives_it(
    replicas, share, data
):
    batch_size = replicas * share
    real = data.draw(st.integers(0, batch_size))
    order = padding.replica_order(real, batch_size, replicas).numpy().tolist()
    assert sorted(order) == list(range(batch_size))
    # As tf.data splits `real` rows: ceil(real / replicas) to each replica in turn.
    per_replica = -(-real // replicas)
    for replica in range(replicas):
        mine = order[replica * share : (replica + 1) * share]
        expected = list(range(replica * per_replica, min(real, (replica + 1) * per_replica)))
        assert mine[: len(expected)] == expected
        assert all(row >= real for row in mine[len(expected) :])


def test_a_full_batch_of_any_size_keeps_its_order():
    assert padding.replica_order(7, 7, 4).numpy().tolist() == list(range(7))
