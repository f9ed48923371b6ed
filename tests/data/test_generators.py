"""tpufit/data/generators.py: a generator read ahead, checked, streamed or held in memory.

End to end through fit, evaluate and predict, exact against plain Keras.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASSES, assert_same_weights, keras_twin, tiny_data
from user_inputs import BATCH, ROWS, assert_same_logs, batches, compiled, weights_of

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import InfeedRequest, build_infeed, generators

STRATEGY = tf.distribute.get_strategy()

def test_generator_source_reads_two_batches_ahead_and_streams_the_rest_once():
    pulled = []

    def generator():
        for i in range(5):
            pulled.append(i)
            yield (np.full((2, 1), i, "float32"),)

    source = generators.GeneratorSource(generator())
    assert pulled == [0, 1]
    rows = [int(b[0][0, 0]) for b in source.dataset(endless=False).as_numpy_iterator()]
    assert rows == [0, 1, 2, 3, 4]


def _stream_error(feed) -> tf.errors.OpError:
    with pytest.raises(tf.errors.OpError) as raised:
        for _ in feed.dataset:
            pass
    return raised.value


def test_an_error_raised_while_the_stream_is_read_shows_up_on_the_infeed():
    x, _ = tiny_data(64)

    def generator():
        yield from batches(x[:48])
        yield ({"oops": x[48:]},)

    request = InfeedRequest(Mode.PREDICT, Layout.PADDED)
    feed = build_infeed(generator(), None, None, request, STRATEGY)
    assert feed.pipeline_errors == []
    op_error = _stream_error(feed)
    (error,) = feed.pipeline_errors
    assert isinstance(error, tpufit.InvalidArgumentError)
    assert "batch 3 is ({'oops': float32[16, 6]},)" in str(error)
    assert str(error).splitlines()[0] in op_error.message


def test_running_out_before_steps_per_epoch_is_recorded_on_the_infeed():
    x, y = tiny_data(32)
    request = InfeedRequest(Mode.TRAIN, Layout.PADDED, steps=5)
    feed = build_infeed(batches(x, y), None, None, request, STRATEGY)
    op_error = _stream_error(feed)
    (error,) = feed.pipeline_errors
    assert "ran out of data after 2 batches" in str(error)
    assert str(error).splitlines()[0] in op_error.message


def test_each_generator_infeed_has_its_own_errors():
    x, y = tiny_data(32)
    request = InfeedRequest(Mode.TRAIN, Layout.PADDED, steps=5)
    first = build_infeed(batches(x, y), None, None, request, STRATEGY)
    second = build_infeed(batches(x, y), None, None, request, STRATEGY)
    _stream_error(first)
    assert len(first.pipeline_errors) == 1 and second.pipeline_errors == []


def test_a_generator_read_more_than_once_is_held_in_memory_and_keeps_its_order():
    x, y = tiny_data(40)
    request = InfeedRequest(Mode.TRAIN, Layout.PADDED, BATCH, shuffle=True, seed=3)
    feed = build_infeed(batches(x, y), None, None, request, STRATEGY)
    assert (feed.rows, feed.steps_per_pass, feed.mode) == (40, 3, Mode.TRAIN)
    seen = [data[1][signals["mask"] > 0.5] for data, signals in feed.dataset.take(3)]
    np.testing.assert_array_equal(np.concatenate(seen), y)  # a generator is never shuffled


def test_generator_to_exhaustion_trains_evaluates_and_predicts_exactly():
    x, y = tiny_data(ROWS)
    tm = compiled()
    twin = keras_twin(tm.model)
    history = tm.fit(batches(x, y), epochs=2, verbose=0)
    theirs = twin.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert tm.global_step == 2 * 7  # every epoch runs the whole generator, read once
    assert_same_weights(tm.model, twin)
    np.testing.assert_allclose(history.history["loss"], theirs.history["loss"], rtol=1e-5)
    ours = tm.evaluate(batches(x, y), return_dict=True, verbose=0)
    assert_same_logs(ours, twin.evaluate(x, y, batch_size=ROWS, return_dict=True, verbose=0))
    predictions = tm.predict(batches(x), verbose=0)
    assert predictions.shape == (ROWS, CLASSES)
    np.testing.assert_allclose(predictions, twin(x), atol=1e-5)


def test_generator_with_steps_per_epoch_continues_across_epochs_like_keras():
    x, y = tiny_data(64)

    def endless():
        while True:
            yield from batches(x, y)

    tm = compiled()
    twin = keras_twin(tm.model)
    tm.fit(endless(), steps_per_epoch=3, epochs=2, verbose=0)
    twin.fit(endless(), steps_per_epoch=3, epochs=2, verbose=0)
    assert tm.global_step == 6
    assert_same_weights(tm.model, twin)


def test_generator_with_steps_reads_only_that_many_batches_for_predict():
    x, _ = tiny_data(64)
    tm = compiled()
    predictions = tm.predict(itertools.cycle(batches(x)), steps=3, verbose=0)
    np.testing.assert_allclose(predictions, tm.model(x[:48]), atol=1e-5)


def test_generator_of_varying_batch_sizes_is_rebatched_to_the_static_batch_without_retracing():
    x, y = tiny_data(ROWS)
    sizes = [5, 25, 3, 40, 27]
    tm = compiled()
    twin = keras_twin(tm.model)
    predictions = tm.predict(batches(x, sizes=sizes), batch_size=BATCH, verbose=0)
    np.testing.assert_allclose(predictions, twin(x), atol=1e-5)
    ours = tm.evaluate(batches(x, y, sizes=sizes), batch_size=BATCH, return_dict=True, verbose=0)
    assert_same_logs(ours, twin.evaluate(x, y, batch_size=ROWS, return_dict=True, verbose=0))
    # Without batch_size, the first batch's size is the static batch.
    tm.fit(batches(x, y, sizes=[BATCH, 3, 50, 31]), epochs=1, verbose=0)
    twin.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert tm.global_step == 7
    assert_same_weights(tm.model, twin)
    assert tm.traces == {"train": 1, "eval": 1, "predict": 1}


def test_generator_that_runs_out_before_steps_per_epoch_is_a_tpufit_error():
    x, y = tiny_data(32)
    tm = compiled()
    with pytest.raises(tpufit.InvalidArgumentError, match="ran out of data after 2 batches"):
        tm.fit(batches(x, y), steps_per_epoch=5, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "second, shown",
    [
        (lambda x, y: ({"a": x}, y), "{'a': float32[16, 6]}"),
        (lambda x, y: (x.astype("int32"), y), "int32[16, 6]"),
        (lambda x, y: (x, y, np.ones(len(y))), "(float32[16, 6], int64[16], float32[16])"),
        (lambda x, y: (x[:, :4], y), "float32[16, 4]"),
    ],
)
def test_generator_yielding_inconsistent_batches_fails_before_device_work_showing_both(
    second, shown
):
    x, y = tiny_data(64)

    def generator():
        yield x[:16], y[:16]
        yield second(x[16:32], y[16:32])

    tm = compiled()
    before = weights_of(tm.model)
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tm.fit(generator(), epochs=1, verbose=0)
    message = str(raised.value)
    assert "batch 0 is (float32[16, 6], int64[16])" in message
    assert f"batch 1 is {shown}" in message or shown in message
    assert tm.traces == {}
    for a, b in zip(before, tm.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_generator_changing_later_in_the_stream_is_a_tpufit_error_showing_both():
    x, _ = tiny_data(64)

    def generator():
        yield from batches(x[:48])
        yield ({"oops": x[48:]},)

    tm = compiled()
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tm.predict(generator(), verbose=0)
    assert "batch 0 is (float32[16, 6],)" in str(raised.value)
    assert "batch 3 is ({'oops': float32[16, 6]},)" in str(raised.value)


def test_generator_with_y_or_sample_weight_arguments_is_rejected():
    x, y = tiny_data(32)
    tm = compiled()
    with pytest.raises(tpufit.InvalidArgumentError, match="`y`: expected None when x is a gen"):
        tm.fit(batches(x, y), y, verbose=0)
    with pytest.raises(tpufit.InvalidArgumentError, match="Empty generator"):
        tm.predict(iter([]), verbose=0)


def test_generator_validation_data_is_read_once_and_used_every_epoch():
    x, y = tiny_data(ROWS)
    tm = compiled()
    history = tm.fit(x, y, batch_size=BATCH, epochs=2, validation_data=batches(x, y), verbose=0)
    twin = keras_twin(tm.model)
    expected = twin.evaluate(x, y, batch_size=ROWS, return_dict=True, verbose=0)
    assert len(history.history["val_loss"]) == 2
    np.testing.assert_allclose(history.history["val_loss"][-1], expected["loss"], rtol=1e-5)
