"""tpufit/data/py_datasets.py: a PyDataset through Keras's adapter, one step per batch.

End to end through fit, evaluate and predict, exact against plain Keras.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_same_weights, keras_twin, tiny_data
from user_inputs import BATCH, ROWS, Batches, assert_same_logs, compiled

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import InfeedRequest, build_infeed, py_datasets

STRATEGY = tf.distribute.get_strategy()


class Squares(keras.utils.PyDataset):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.begun = self.ended = 0

    def __len__(self):
        return 3

    def __getitem__(self, index):
        return np.full((2, 1), index**2, "float32")

    def on_epoch_begin(self):
        self.begun += 1

    def on_epoch_end(self):
        self.ended += 1


@pytest.mark.parametrize("workers", [1, 3])
def test_py_dataset_source_makes_one_pass_per_iteration_with_epoch_hooks(workers):
    data = Squares(workers=workers)
    dataset = py_datasets.PyDatasetSource(data, shuffle=False).dataset()
    assert int(dataset.cardinality()) == 3
    for _ in range(2):
        values = [int(b[0][0, 0]) for b in dataset.as_numpy_iterator()]
        assert values == [0, 1, 4]
    assert data.begun == data.ended == 2


class ChangingLater(Squares):
    def __getitem__(self, index):
        batch = super().__getitem__(index)
        return batch.astype("int32") if index == 2 else batch


def test_a_batch_that_changes_later_is_recorded_on_the_infeed_that_reads_it():
    request = InfeedRequest(Mode.PREDICT, Layout.PADDED)
    feed = build_infeed(ChangingLater(), None, None, request, STRATEGY)
    assert feed.pipeline_errors == []
    with pytest.raises(tf.errors.OpError) as raised:
        for _ in feed.dataset:
            pass
    (error,) = feed.pipeline_errors
    assert isinstance(error, tpufit.InvalidArgumentError)
    assert "batch 2 is (int32[2, 1],)" in str(error)
    assert str(error).splitlines()[0] in raised.value.message


@pytest.mark.parametrize(
    "options",
    [{}, {"workers": 2}, {"workers": 2, "use_multiprocessing": True}],
    ids=["main-thread", "two-threads", "two-processes"],
)
def test_py_dataset_trains_evaluates_and_predicts_exactly_with_keras_workers(options):
    x, y = tiny_data(ROWS)
    tm = compiled()
    twin = keras_twin(tm.model)
    train = Batches(x, y, **options)
    tm.fit(train, epochs=2, shuffle=False, verbose=0)
    twin.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert tm.global_step == 14
    assert_same_weights(tm.model, twin)
    ours = tm.evaluate(Batches(x, y, **options), return_dict=True, verbose=0)
    assert_same_logs(ours, twin.evaluate(x, y, batch_size=ROWS, return_dict=True, verbose=0))
    predictions = tm.predict(Batches(x, **options), verbose=0)
    np.testing.assert_allclose(predictions, twin(x), atol=1e-5)
    if options.get("workers", 1) > 1 and not options.get("use_multiprocessing"):
        assert any(name != "MainThread" for name in train.threads)
    if not options.get("use_multiprocessing"):
        assert train.epochs_ended >= 2  # on_epoch_end after every pass, as in Keras


def test_py_dataset_with_steps_per_epoch_and_an_endless_one():
    x, y = tiny_data(64)
    tm = compiled()
    twin = keras_twin(tm.model)
    with pytest.warns(UserWarning, match="ran out of data"):
        tm.fit(Batches(x, y), steps_per_epoch=3, epochs=3, shuffle=False, verbose=0)
    with pytest.warns(UserWarning, match="ran out of data"):
        twin.fit(Batches(x, y), steps_per_epoch=3, epochs=3, shuffle=False, verbose=0)
    assert tm.global_step == 3 + 1 + 3  # the pass of 4 batches ends the second epoch
    assert_same_weights(tm.model, twin)
    endless = Batches(x, batches=-1)
    assert endless.num_batches is None
    with pytest.raises(tpufit.InvalidArgumentError, match="steps"):
        tm.predict(endless, verbose=0)
    tm.fit(Batches(x, y, batches=-1), max_steps=tm.global_step + 5, verbose=0)  # until stopped
    assert tm.global_step == 7 + 5
    np.testing.assert_allclose(
        tm.predict(endless, steps=6, verbose=0), tm.model(np.concatenate([x, x[:32]])), atol=1e-5
    )


def test_py_dataset_batch_size_below_its_batches_fails_before_device_work():
    x, y = tiny_data(64)
    tm = compiled()
    with pytest.raises(tpufit.InvalidArgumentError, match="at least 16"):
        tm.fit(Batches(x, y), batch_size=8, verbose=0)
    assert tm.traces == {}


def test_py_dataset_shuffle_reorders_its_batches_each_epoch_as_keras_does():
    x, y = tiny_data(ROWS)
    passes: list[list[int]] = []

    class Recording(Batches):
        def on_epoch_begin(self):
            passes.append([])

        def __getitem__(self, index):
            if passes:  # not the two batches read ahead to learn the structure
                passes[-1].append(index)
            return super().__getitem__(index)

    tm = compiled()
    keras.utils.set_random_seed(1)
    tm.fit(Recording(x, y), epochs=2, shuffle=True, verbose=0)
    complete = [order for order in passes if len(order) == 7][:2]
    assert len(complete) == 2
    assert all(sorted(order) == list(range(7)) for order in complete)
    assert complete[0] != complete[1]


class WithoutOptional(keras.utils.PyDataset):
    """Batches of 2 rows leaving out the optional input `o` (None in its place)."""

    def __init__(self, x, y=None):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.x) // 2)

    def __getitem__(self, index):
        rows = slice(2 * index, 2 * index + 2)
        part = {"x": self.x[rows], "o": None}
        return (part,) if self.y is None else (part, self.y[rows])


def test_none_in_a_py_datasets_batches_reaches_an_optional_input():
    # Keras 3.15 itself fails on this PyDataset (tf.data cannot hold the None); its
    # results on the same batches as arrays are the reference.
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 2), dtype=np.float32), rng.random((5, 1), dtype=np.float32)
    results = []
    for attach in (True, False):
        keras.utils.set_random_seed(0)
        inputs = {"x": keras.Input((2,), name="x"), "o": keras.Input((2,), name="o", optional=True)}
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs["x"]))
        if attach:
            tpufit.attach(model)
        model.compile(loss="mse", optimizer="sgd")
        data = WithoutOptional(x, y) if attach else ({"x": x, "o": None}, y)
        batch = {} if attach else {"batch_size": 2}
        history = model.fit(*(data if not attach else (data,)), shuffle=False, verbose=0, **batch)
        inputs_only = WithoutOptional(x) if attach else {"x": x, "o": None}
        results.append((history.history["loss"], model.predict(inputs_only, verbose=0), model))
    (loss, predicted, ours), (keras_loss, keras_predicted, theirs) = results
    np.testing.assert_allclose(loss, keras_loss, rtol=1e-5)
    np.testing.assert_allclose(predicted, keras_predicted, rtol=1e-5, atol=1e-6)
    assert_same_weights(ours, theirs)
