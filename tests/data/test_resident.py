"""tpufit/data/resident.py: arrays on the device, batches gathered in the loop, as the stream's.

The tests of the other stages run under the resident infeed too: the default
`infeed="auto"` keeps their small arrays resident, and `TPUFIT_TEST_INFEED=resident`
or `=stream` forces one infeed (tests/conftest.py). The inner tests here also
run under four replicas, in a child process.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    compile_args,
    make_strategy,
    own_step_model,
    replicas,
    row_id_data,
    run_pytest_with_replicas,
    take_numpy,
    tiny_data,
    tiny_model,
)

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import arrays, dataset_stream, infeed, resident
from tpufit.data.request import InfeedRequest

one_replica = pytest.mark.skipif(replicas() > 1, reason="checked once, with one replica")


def _feed(data, batch: int, mode: Mode, layout: Layout, seed: int | None = None):
    feed = infeed.from_arrays(data, batch, mode=mode, layout=layout, shuffle_seed=seed)
    return resident.offer(feed, data, mode=mode, layout=layout, seed=seed, drop_remainder=False)


def _numpy(element):
    return tf.nest.map_structure(lambda t: t.numpy(), element)


@one_replica
@pytest.mark.parametrize(
    ("mode", "layout", "rows", "batch", "seed"),
    [
        (Mode.TRAIN, Layout.PADDED, 45, 8, 3),
        (Mode.TRAIN, Layout.TRUE_SIZE, 45, 8, 3),
        (Mode.TRAIN, Layout.PADDED, 40, 8, None),
        (Mode.EVAL, Layout.PADDED, 45, 8, None),
        (Mode.PREDICT, Layout.PADDED, 5, 8, None),
    ],
)
def test_resident_batches_are_the_streams_in_the_same_order(mode, layout, rows, batch, seed):
    feed = _feed(row_id_data(rows), batch, mode, layout, seed)
    steps = len(feed.resident.positions)
    iterator = feed.resident.iterator(tf.distribute.get_strategy())
    for streamed in take_numpy(feed.dataset, 3 * steps):
        element = _numpy(next(iterator))
        if streamed[1]["stop"].all():  # a stop batch: its rows are never read
            element, streamed = element[1], streamed[1]
        tf.nest.map_structure(np.testing.assert_array_equal, element, streamed)


@one_replica
def test_a_resumed_resident_infeed_starts_where_the_skipped_stream_does():
    feed = _feed(row_id_data(30), 4, Mode.TRAIN, Layout.PADDED, seed=7).skipping(11, 0)
    iterator = feed.resident.iterator(tf.distribute.get_strategy())
    for streamed in take_numpy(feed.dataset, 4):
        tf.nest.map_structure(np.testing.assert_array_equal, _numpy(next(iterator)), streamed)


def _run(infeed_choice: str, model_fn=tiny_model, partial_batch: str = "auto"):
    strategy = make_strategy()
    with strategy.scope():
        model = model_fn()
    config = tpufit.RunConfig(
        infeed=infeed_choice, seed=5, iterations_per_loop=3, partial_batch=partial_batch
    )
    tm = tpufit.TPUModel(model, strategy=strategy, config=config)
    x, y = tiny_data(45)
    weights = np.linspace(0.5, 1.5, len(x)).astype("float32")
    if model_fn is own_step_model:  # its step takes `(x, y)` only
        tm.compile(optimizer="sgd", loss="mse")
        y, weights = x[:, :1] * 2.0, None
    else:
        tm.compile(**compile_args())
    history = tm.fit(
        x, y, sample_weight=weights, batch_size=8, epochs=2, validation_data=(x[:13], y[:13]),
        verbose=0,
    )  # fmt: skip
    logs = tm.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    predictions = tm.predict(x, batch_size=8, verbose=0)
    return history.history, logs, predictions, model.get_weights(), tm


@pytest.mark.parametrize(
    ("model_fn", "partial_batch"),
    [(tiny_model, "auto"), (tiny_model, "true_size"), (own_step_model, "auto")],
    ids=["padded", "true-size", "own-step"],
)
def test_resident_runs_give_the_streams_results_bit_for_bit(model_fn, partial_batch):
    streamed = _run("stream", model_fn, partial_batch)
    on_device = _run("resident", model_fn, partial_batch)
    for a, b in zip(streamed[:4], on_device[:4], strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    assert on_device[4].traces == streamed[4].traces


@one_replica
def test_class_weights_reach_the_resident_infeed_as_sample_weights():
    def weighted(choice):
        model = tiny_model()
        tm = tpufit.TPUModel(model, config=tpufit.RunConfig(infeed=choice, seed=1))
        tm.compile(**compile_args())
        x, y = tiny_data(30)
        tm.fit(x, y, batch_size=8, class_weight={0: 0.2, 1: 1.0, 2: 3.0}, verbose=0)
        return model.get_weights()

    for a, b in zip(weighted("stream"), weighted("resident"), strict=True):
        np.testing.assert_array_equal(a, b)


@one_replica
def test_the_run_chooses_its_infeed_from_the_config_and_the_size(monkeypatch):
    request = InfeedRequest(Mode.PREDICT, Layout.PADDED, 8)
    x, _ = tiny_data(20)
    feed = arrays.build(x, None, None, request, tf.distribute.get_strategy())
    strategy = tf.distribute.get_strategy()
    assert resident.iterator_for(feed, "stream", strategy) is None
    assert isinstance(resident.iterator_for(feed, "resident", strategy), resident.ResidentIterator)
    monkeypatch.setattr(resident, "budget_bytes", lambda one_pass=False: x.nbytes - 1)
    assert resident.iterator_for(feed, "auto", strategy) is None
    assert resident.iterator_for(feed, "resident", strategy) is not None
    monkeypatch.setattr(resident, "budget_bytes", lambda one_pass=False: x.nbytes)
    assert resident.iterator_for(feed, "auto", strategy) is not None


@one_replica
def test_strings_and_a_dataset_stream_whatever_the_config():
    request = InfeedRequest(Mode.PREDICT, Layout.PADDED, 4)
    strategy = tf.distribute.get_strategy()
    words = arrays.build(np.array(["a", "b", "c"]), None, None, request, strategy)
    assert resident.iterator_for(words, "resident", strategy) is None
    assert (
        dataset_stream.from_dataset(
            tf.data.Dataset.range(4).batch(2), mode=Mode.PREDICT, layout=Layout.PADDED
        ).resident
        is None
    )


@one_replica
def test_the_device_copy_is_reused_while_the_array_is_unchanged():
    x, _ = tiny_data(40)
    first = resident._CACHE.tensor(x)
    assert resident._CACHE.tensor(x) is first
    assert resident._CACHE.tensor(x[:20]) is not first  # another view: its own copy
    x[0, 0] += 1.0  # a sampled row changed in place
    changed = resident._CACHE.tensor(x)
    assert changed is not first and changed.numpy()[0, 0] == x[0, 0]


@one_replica
def test_predict_again_on_the_same_array_copies_nothing_and_agrees():
    tm = tpufit.TPUModel(tiny_model(), config=tpufit.RunConfig(infeed="resident"))
    tm.compile(**compile_args())
    x, _ = tiny_data(21)
    first = tm.predict(x, batch_size=8, verbose=0)
    before = len(resident._CACHE._entries)
    np.testing.assert_array_equal(tm.predict(x, batch_size=8, verbose=0), first)
    assert len(resident._CACHE._entries) == before


@one_replica
def test_run_config_rejects_an_unknown_infeed():
    with pytest.raises(tpufit.InvalidArgumentError, match="infeed"):
        tpufit.RunConfig(infeed="device")


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(replicas() > 1, reason="this is the child process")
def test_four_replicas_gather_their_own_shares_in_a_child_process():
    summary = run_pytest_with_replicas("data/test_resident.py", 4, timeout=1200)
    assert "passed" in summary and "failed" not in summary, summary
