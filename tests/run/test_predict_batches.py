"""`TPUModel.predict_batches`: predict one loop at a time; joined, the items equal `predict`."""

from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import FEATURES, tiny_data, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpufit

ROWS, BATCH = 50, 8  # 7 batches, the last of 2 rows


def joined(items: list) -> np.ndarray:
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *items)


_MODELS: dict[int, tpufit.TPUModel] = {}


def model_looping(iterations_per_loop: int) -> tpufit.TPUModel:
    """One TPUModel per loop length, kept across examples (its programs too)."""
    if iterations_per_loop not in _MODELS:
        _MODELS[iterations_per_loop] = tpufit.TPUModel(
            tiny_model(), iterations_per_loop=iterations_per_loop
        )
    return _MODELS[iterations_per_loop]


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 40),
    batch_size=st.sampled_from([1, 3, 8]),
    iterations_per_loop=st.integers(1, 3),
)
def test_the_batches_joined_equal_predict_and_each_is_at_most_one_loop(
    rows, batch_size, iterations_per_loop
):
    x, _ = tiny_data(rows)
    tm = model_looping(iterations_per_loop)
    items = list(tm.predict_batches(x, batch_size=batch_size))
    np.testing.assert_array_equal(joined(items), tm.predict(x, batch_size=batch_size, verbose=0))
    assert all(0 < len(item) <= iterations_per_loop * batch_size for item in items)


class Batches(keras.utils.PyDataset):
    def __init__(self, x):
        super().__init__()
        self.x = x

    def __len__(self):
        return -(-len(self.x) // BATCH)

    def __getitem__(self, index):
        return self.x[index * BATCH : (index + 1) * BATCH]


def generated(x):
    for start in range(0, len(x), BATCH):
        yield (x[start : start + BATCH],)


INPUTS = {
    "dataset": lambda x: dict(x=tf.data.Dataset.from_tensor_slices(x).batch(BATCH)),
    "generator": lambda x: dict(x=generated(x)),
    "py_dataset": lambda x: dict(x=Batches(x)),
    "input_fn": lambda x: dict(
        input_fn=lambda ctx: tf.data.Dataset.from_tensor_slices(x).batch(BATCH), batch_size=BATCH
    ),
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_every_input_kind_streams_the_rows_predict_returns(kind):
    x, _ = tiny_data(ROWS)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=3)
    items = list(tm.predict_batches(**INPUTS[kind](x)))
    assert [len(item) for item in items] == [24, 24, 2]
    np.testing.assert_array_equal(joined(items), tm.predict(**INPUTS[kind](x), verbose=0))


def test_nested_outputs_and_steps_stream_as_predict_returns_them():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((FEATURES,))
    outputs = {"a": keras.layers.Dense(2)(inputs), "b": keras.layers.Dense(1)(inputs)}
    tm = tpufit.TPUModel(keras.Model(inputs, outputs), iterations_per_loop=2)
    x, _ = tiny_data(ROWS)
    items = list(tm.predict_batches(x, batch_size=BATCH, steps=5))
    expected = tm.predict(x, batch_size=BATCH, steps=5, verbose=0)
    assert [len(item["a"]) for item in items] == [16, 16, 8]
    tf.nest.map_structure(np.testing.assert_array_equal, joined(items), expected)


class Events(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events: list[str] = []

    def on_predict_begin(self, logs=None):
        self.events.append("begin")

    def on_predict_batch_end(self, batch, logs=None):
        self.events.append(f"batch_end {batch} {len(logs['outputs'])}")

    def on_predict_end(self, logs=None):
        self.events.append("end")


def test_each_loop_runs_only_when_asked_for_and_closing_ends_the_run():
    x, _ = tiny_data(ROWS)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=3)
    events = Events()
    stream = tm.predict_batches(x, batch_size=BATCH, callbacks=[events])
    assert events.events == []  # Built, not started.
    next(stream)
    assert events.events == ["begin", "batch_end 2 24"]
    stream.close()
    assert events.events == ["begin", "batch_end 2 24", "end"]


def test_callbacks_see_every_loop_and_the_end_when_the_stream_is_exhausted():
    x, _ = tiny_data(ROWS)
    events = Events()
    list(tpufit.TPUModel(tiny_model(), iterations_per_loop=3).predict_batches(
        x, batch_size=BATCH, callbacks=[events]))  # fmt: skip
    assert events.events == ["begin", "batch_end 2 24", "batch_end 5 24", "batch_end 6 2", "end"]


def test_a_yielded_batch_is_not_kept_by_the_run():
    x, _ = tiny_data(ROWS)
    stream = tpufit.TPUModel(tiny_model(), iterations_per_loop=3).predict_batches(x, batch_size=8)
    first = weakref.ref(next(stream))
    next(stream)
    gc.collect()
    assert first() is None
    stream.close()


def test_bad_arguments_fail_at_the_call_before_any_loop_runs():
    x, _ = tiny_data(ROWS)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=3)
    with pytest.raises(tpufit.InvalidArgumentError, match="steps"):
        tm.predict_batches(x, steps=0)
    with pytest.raises(tpufit.TPUFitError, match="batch_size"):
        tm.predict_batches(x, batch_size=-2)


def test_data_ending_before_steps_warns_as_predict_does_at_the_users_line():
    x, _ = tiny_data(ROWS)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=3)
    with pytest.warns(UserWarning, match="ran out of data") as caught:
        items = list(tm.predict_batches(generated(x), steps=9))
    assert sum(len(item) for item in items) == ROWS
    assert {w.filename for w in caught if "ran out" in str(w.message)} == {__file__}
