"""Every input a Keras user has, through fit, evaluate and predict, exact against plain Keras.

Generators, `keras.utils.PyDataset`s, pandas DataFrames / Series and
`class_weight`; `input_fn(ctx)` is in test_input_fn.py.
"""

from __future__ import annotations

import itertools
import threading

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import (
    CLASSES,
    FEATURES,
    assert_same_weights,
    compile_args,
    copy_model,
    keras_twin,
    tiny_data,
    tiny_model,
)

import tpufit

ROWS, BATCH = 100, 16


def compiled(model=None, **kwargs):
    tm = tpufit.TPUModel(model or tiny_model(), iterations_per_loop=3, **kwargs)
    tm.compile(**compile_args())
    return tm


def assert_same_logs(ours, theirs, rtol=1e-5):
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=rtol, err_msg=name)


def batches(x, y=None, size=BATCH, sizes=None):
    """A generator of `(x, y)` (or `(x,)`) batches of `size` rows, or of the given `sizes`."""
    bounds = list(itertools.accumulate(sizes or [size] * -(-len(x) // size), initial=0))
    for start, stop in itertools.pairwise(bounds):
        yield (x[start:stop],) if y is None else (x[start:stop], y[start:stop])


# --- Python generators ------------------------------------------------------------


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


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


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


# --- keras.utils.PyDataset ----------------------------------------------------------


class Batches(keras.utils.PyDataset):
    """A PyDataset of the rows in batches of 16 (the last short), recording its calls."""

    def __init__(self, x, y=None, batches=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y
        self.batches = batches
        self.epochs_ended = 0
        self.threads: set[str] = set()

    def __len__(self):
        return -(-len(self.x) // BATCH) if self.batches is None else self.batches

    @property
    def num_batches(self):
        return None if self.batches == -1 else len(self)

    def __getitem__(self, index):
        self.threads.add(threading.current_thread().name)
        index %= -(-len(self.x) // BATCH)
        rows = slice(index * BATCH, (index + 1) * BATCH)
        return self.x[rows] if self.y is None else (self.x[rows], self.y[rows])

    def on_epoch_end(self):
        self.epochs_ended += 1


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
    tm.fit(Batches(x, y), steps_per_epoch=3, epochs=3, verbose=0)
    assert tm.global_step == 9
    endless = Batches(x, batches=-1)
    assert endless.num_batches is None
    with pytest.raises(tpufit.InvalidArgumentError, match="steps"):
        tm.predict(endless, verbose=0)
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


# --- pandas ---------------------------------------------------------------------------


def frame(x):
    return pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])


def test_dataframe_and_series_are_exact_in_fit_evaluate_and_predict():
    x, y = tiny_data(ROWS)
    tm = compiled()
    twin = keras_twin(tm.model)
    tm.fit(frame(x), pd.Series(y), batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    twin.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert_same_weights(tm.model, twin)
    ours = tm.evaluate(frame(x), pd.Series(y), batch_size=BATCH, return_dict=True, verbose=0)
    assert_same_logs(ours, twin.evaluate(x, y, batch_size=ROWS, return_dict=True, verbose=0))
    np.testing.assert_allclose(
        tm.predict(frame(x), batch_size=BATCH, verbose=0), twin(x), atol=1e-5
    )


def test_dict_of_columns_feeds_a_model_with_one_input_per_column():
    keras.utils.set_random_seed(0)
    inputs = {name: keras.Input((1,), name=name) for name in ("age", "income")}
    hidden = keras.layers.Dense(4, activation="relu")(
        keras.layers.Concatenate()(list(inputs.values()))
    )
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"age": rng.integers(18, 90, 50), "income": rng.normal(size=50)})
    target = pd.Series(rng.normal(size=50))
    tm = tpufit.TPUModel(model, iterations_per_loop=2)
    tm.compile(optimizer="sgd", loss="mse")
    tm.fit(dict(table), target, batch_size=8, epochs=1, verbose=0)
    columns = {name: table[name].to_numpy("float32")[:, None] for name in table}
    np.testing.assert_allclose(
        tm.predict(dict(table), batch_size=16, verbose=0), model(columns), rtol=1e-5, atol=1e-5
    )
    reference = copy_model(model)
    reference.compile(optimizer="sgd", loss="mse")
    theirs = reference.evaluate(columns, target.to_numpy(), batch_size=50, verbose=0)
    np.testing.assert_allclose(
        tm.evaluate(table.to_dict("series"), target, verbose=0), theirs, rtol=1e-5
    )


def test_dataframe_with_non_numeric_columns_is_a_tpufit_error_naming_them():
    x, y = tiny_data(20)
    table = frame(x).assign(city=["Oslo"] * 20, day=pd.Timestamp("2024-01-01"))
    tm = compiled()
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tm.fit(table, y, verbose=0)
    message = str(raised.value)
    assert "'city'" in message and "'day'" in message and "'f0'" not in message
    assert tm.traces == {}


def test_validation_split_of_a_dataframe_holds_out_its_last_rows():
    x, y = tiny_data(ROWS)
    tm = compiled()
    history = tm.fit(frame(x), pd.Series(y), batch_size=BATCH, validation_split=0.2, verbose=0)
    assert tm.global_step == 5  # 80 rows train
    twin = keras_twin(tm.model)
    expected = twin.evaluate(x[80:], y[80:], batch_size=20, return_dict=True, verbose=0)
    np.testing.assert_allclose(history.history["val_loss"][0], expected["loss"], rtol=1e-5)


# --- sample_weight, class_weight, shuffle, initial_epoch ----------------------------------


def test_sample_weight_trains_step_for_step_like_keras_through_the_padded_batch():
    x, y = tiny_data(ROWS)
    weights = np.random.default_rng(0).uniform(0.1, 3.0, ROWS)
    tm = compiled()
    twin = keras_twin(tm.model)
    tm.fit(x, y, sample_weight=weights, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    twin.fit(x, y, sample_weight=weights, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert_same_weights(tm.model, twin)


@pytest.mark.parametrize("source", ["arrays", "dataset", "generator", "py_dataset", "one_hot"])
def test_class_weight_trains_step_for_step_like_keras(source):
    x, y = tiny_data(ROWS)
    class_weight = {0: 0.5, 1: 3.0}  # class 2 is missing: weight 1
    targets = keras.utils.to_categorical(y, CLASSES) if source == "one_hot" else y
    data = {
        "arrays": (x, y),
        "one_hot": (x, targets),
        "dataset": (tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH),),
        "generator": (batches(x, y),),
        "py_dataset": (Batches(x, y),),
    }[source]
    tm = compiled()
    twin = keras_twin(tm.model)
    if source == "one_hot":
        for model in (tm, twin):
            loss = keras.losses.CategoricalCrossentropy(from_logits=True)
            model.compile(**compile_args() | {"loss": loss})
    tm.fit(*data, batch_size=None if len(data) == 1 else BATCH, epochs=2, shuffle=False,
           class_weight=class_weight, verbose=0)  # fmt: skip
    twin.fit(x, targets, batch_size=BATCH, epochs=2, shuffle=False, class_weight=class_weight,
             verbose=0)  # fmt: skip
    assert_same_weights(tm.model, twin)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (
            {"class_weight": {0: 1.0}, "sample_weight": np.ones(20)},
            ["class_weight", "sample_weight"],
        ),
        ({"class_weight": {"cat": 1.0}}, ["class_weight", "'cat'"]),
        ({"class_weight": [1.0, 2.0]}, ["class_weight"]),
    ],
)
def test_bad_class_weight_fails_before_device_work(kwargs, words):
    x, y = tiny_data(20)
    tm = compiled()
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tm.fit(x, y, verbose=0, **kwargs)
    for word in words:
        assert word in str(raised.value)
    assert tm.traces == {}


def test_shuffle_is_seeded_and_reshuffles_every_epoch():
    x, y = tiny_data(ROWS)

    def trained(seed, shuffle=True):
        tm = compiled(tiny_model(), config=tpufit.RunConfig(seed=seed))
        tm.fit(x, y, batch_size=BATCH, epochs=2, shuffle=shuffle, verbose=0)
        return tm.model.get_weights()

    same, again, other, unshuffled = trained(3), trained(3), trained(4), trained(3, False)
    for a, b in zip(same, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(same, other, strict=True))
    assert any(not np.allclose(a, b) for a, b in zip(same, unshuffled, strict=True))


def test_initial_epoch_resumes_the_epoch_count():
    x, y = tiny_data(64)
    tm = compiled()
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    history = tm.fit(
        x, y, batch_size=BATCH, epochs=4, initial_epoch=2, callbacks=[callback], verbose=0
    )
    assert seen == [2, 3] and history.epoch == [2, 3]
    assert tm.global_step == 8
