"""tpufit/data/generators.py: a generator read ahead, checked, streamed or held in memory.

End to end through fit, evaluate and predict, exact against plain Keras (plain
Keras code run through `tpufit.attach` where Keras's own behaviour is compared).
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    CLASSES,
    assert_close,
    assert_same_weights,
    keras_twin,
    side_by_side,
    tiny_data,
    warned,
)
from user_inputs import BATCH, ROWS, assert_same_logs, batches, compiled, weights_of

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import InfeedRequest, build_infeed, generators

STRATEGY = tf.distribute.get_strategy()
RAN_OUT = "Your input ran out of data"


def test_generator_source_reads_two_batches_ahead_and_streams_the_rest_once():
    pulled = []

    def generator():
        for i in range(5):
            pulled.append(i)
            yield (np.full((2, 1), i, "float32"),)

    source = generators.GeneratorSource(generator())
    assert pulled == [0, 1]
    rows = [int(b[0][0, 0]) for b in source.dataset().as_numpy_iterator()]
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


def test_each_generator_infeed_has_its_own_errors():
    x, y = tiny_data(64)

    def changing():
        yield from batches(x[:48], y[:48])
        yield x[48:], y[48:].astype("float32")

    request = InfeedRequest(Mode.TRAIN, Layout.PADDED, steps=5)
    first = build_infeed(changing(), None, None, request, STRATEGY)
    second = build_infeed(changing(), None, None, request, STRATEGY)
    _stream_error(first)
    assert len(first.pipeline_errors) == 1 and second.pipeline_errors == []


def test_validation_data_is_held_in_memory_up_to_its_steps_and_keeps_its_order():
    x, y = tiny_data(40)
    request = InfeedRequest(Mode.EVAL, Layout.PADDED, BATCH, reread=True)
    feed = build_infeed(batches(x, y), None, None, request, STRATEGY)
    assert (feed.rows, feed.steps_per_pass, feed.mode) == (40, 3, Mode.EVAL)
    seen = [data[1][signals["mask"] > 0.5] for data, signals in feed.dataset.take(3)]
    np.testing.assert_array_equal(np.concatenate(seen), y)  # a generator is never shuffled
    pulled = []

    def endless():
        for index in itertools.count():
            pulled.append(index)
            yield x[:BATCH], y[:BATCH]

    request = InfeedRequest(Mode.EVAL, Layout.PADDED, BATCH, steps=4, reread=True)
    feed = build_infeed(endless(), None, None, request, STRATEGY)
    assert (feed.rows, feed.steps_per_pass, len(pulled)) == (4 * BATCH, 4, 4)


def _read(dataset: tf.data.Dataset) -> list[int]:
    return [int(data[0][0, 0]) for data, _ in dataset.as_numpy_iterator()]


@pytest.mark.parametrize("keep", [False, True])
def test_training_reads_a_generator_ahead_to_find_its_end_and_keeps_it_only_for_more_epochs(keep):
    sizes = [5, 25, 3, 4]  # 37 rows: 5 steps of 8, the last of 5 rows

    def generator():
        start = 0
        for size in sizes:
            yield np.arange(start, start + size, dtype="float32")[:, None], np.zeros(size)
            start += size

    request = InfeedRequest(Mode.TRAIN, Layout.PADDED, 8, reread=keep)
    feed = build_infeed(generator(), None, None, request, STRATEGY)
    lookahead = feed.lookahead
    assert feed.steps_per_pass is None and lookahead.repeats == keep
    assert lookahead.steps_within(2) == 2 and lookahead.steps_within(100) == 5
    first_rows = list(range(0, 37, 8))
    passes = feed.dataset.take(10 if keep else 6)
    assert _read(passes) == first_rows * (2 if keep else 1)  # read ahead, yet read once, in order
    assert lookahead.steps_within(100) == 5


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


def test_a_generator_running_out_before_steps_per_epoch_ends_its_epoch_as_in_keras():
    x, y = tiny_data(80)

    def body(model):
        history = model.fit(batches(x, y, size=8), steps_per_epoch=4, epochs=3, verbose=0)
        return history.history

    theirs, ours = side_by_side(body, iterations_per_loop=3)
    assert_close(ours.result, theirs.result)  # epochs of 4, 4 and the last 2 batches
    assert_close(ours.model.get_weights(), theirs.model.get_weights())
    assert len(warned(ours, RAN_OUT)) == len(warned(theirs, RAN_OUT)) == 1


def test_a_generator_that_has_ended_interrupts_training_in_the_next_epoch():
    x, y = tiny_data(80)
    tm = compiled()
    with pytest.warns(UserWarning, match=RAN_OUT):
        history = tm.fit(batches(x, y, size=8), steps_per_epoch=5, epochs=4, verbose=0)
    assert history.epoch == [0, 1] and tm.global_step == 10


def test_an_endless_generator_without_steps_per_epoch_trains_to_max_steps_holding_nothing():
    x, y = tiny_data(64)
    pulled = []

    def endless():
        for index in itertools.count():
            pulled.append(index)
            yield x[:BATCH], y[:BATCH]

    tm = compiled()
    history = tm.fit(endless(), max_steps=25, verbose=0)
    assert tm.global_step == 25 and history.epoch == [0]
    assert len(pulled) < 25 + 40  # read ahead a little, never to an end


def test_an_endless_validation_generator_is_read_for_validation_steps_only():
    def endless():
        x, y = tiny_data(8)
        while True:
            yield x, y

    def body(model):
        counts = {"train": 0, "test": 0}
        count = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda *_, **__: counts.update(train=counts["train"] + 1),
            on_test_batch_end=lambda *_, **__: counts.update(test=counts["test"] + 1),
        )
        validation = dict(validation_data=endless(), validation_steps=4)
        history = model.fit(
            endless(), steps_per_epoch=3, epochs=2, **validation, callbacks=[count], verbose=0
        )
        return history.history, counts

    theirs, ours = side_by_side(body)
    assert_close(ours.result, theirs.result)
    assert theirs.result[1] == {"train": 6, "test": 8}


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


def optional_input_model(attach: bool) -> keras.Model:
    """`Dense(x)`, plus `o` when given: `o` is an optional input."""
    keras.utils.set_random_seed(0)
    x, o = keras.Input((2,), name="x"), keras.Input((2,), name="o", optional=True)

    class AddIfGiven(keras.layers.Layer):
        def call(self, x, o=None):
            return x if o is None else x + o

    model = keras.Model({"x": x, "o": o}, keras.layers.Dense(1)(AddIfGiven()(x, o)))
    if attach:
        tpufit.attach(model, iterations_per_loop=2)
    model.compile(loss="mse", optimizer="sgd")
    return model


def without_optional(x, y=None, size=2):
    for start in range(0, len(x), size):
        part = {"x": x[start : start + size], "o": None}
        yield (part,) if y is None else (part, y[start : start + size])


def test_none_in_a_generators_batches_reaches_an_optional_input_as_in_keras():
    rng = np.random.default_rng(0)
    x, y = rng.random((7, 2), dtype=np.float32), rng.random((7, 1), dtype=np.float32)
    results = []
    for attach in (True, False):
        model = optional_input_model(attach)
        history = model.fit(without_optional(x, y), shuffle=False, verbose=0).history
        # Validation generators are read into memory: None goes through the array path.
        model.fit({"x": x[:4], "o": None}, y[:4], validation_data=without_optional(x, y), verbose=0)
        loss = model.evaluate(without_optional(x, y, size=7), verbose=0)
        results.append((history, loss, model.predict(without_optional(x), verbose=0), model))
    (history, loss, predicted, ours), (keras_history, keras_loss, keras_predicted, theirs) = results
    np.testing.assert_allclose(history["loss"], keras_history["loss"], rtol=1e-5)
    np.testing.assert_allclose(loss, keras_loss, rtol=1e-5)
    np.testing.assert_allclose(predicted, keras_predicted, rtol=1e-5, atol=1e-6)
    assert_same_weights(ours, theirs)


def test_none_where_a_generator_first_gave_an_array_or_in_its_targets_is_named():
    model = optional_input_model(attach=True)
    ones = np.ones((2, 2), "float32")
    given_then_not = iter([({"x": ones, "o": ones}, ones[:, :1]), ({"x": ones, "o": None}, ones)])
    with pytest.raises(tpufit.InvalidArgumentError, match="yields inconsistent batches"):
        model.fit(given_then_not, verbose=0)
    with pytest.raises(tpufit.InvalidArgumentError, match=r"`y\[1\]` is None in batch 0.*a part"):
        model.fit(iter([({"x": ones, "o": None}, [ones, None])]), verbose=0)


def test_none_in_a_generator_for_a_required_input_is_named():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(1)(a + b))
    tpufit.attach(model)
    model.compile(loss="mse", optimizer="sgd")
    source = iter([([np.ones((2, 2)), None], np.ones((2, 1)))])
    with pytest.raises(tpufit.InvalidArgumentError, match="'b' is not optional"):
        model.fit(source, verbose=0)
