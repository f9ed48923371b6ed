"""tpufit/data/arrays.py: numpy arrays and pandas tables, end to end, exact against plain Keras."""

from __future__ import annotations

import collections

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import (
    FEATURES,
    assert_same_weights,
    copy_model,
    keras_twin,
    optional_input_model,
    tiny_data,
    tiny_model,
)
from user_inputs import BATCH, ROWS, assert_same_logs, compiled

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import InfeedRequest, build_infeed

STRATEGY = tf.distribute.get_strategy()


@pytest.mark.parametrize("shuffle", [True, False])
def test_arrays_are_shuffled_with_the_request_seed_only_when_asked(shuffle):
    x, y = tiny_data(40)

    def order(seed):
        request = InfeedRequest(Mode.TRAIN, Layout.PADDED, 8, shuffle=shuffle, seed=seed)
        feed = build_infeed(x, np.arange(40), None, request, STRATEGY)
        return np.concatenate([data[1] for data, _ in feed.dataset.take(5)])

    first = order(3)
    np.testing.assert_array_equal(first, order(3))
    assert np.array_equal(first, np.arange(40)) != shuffle
    np.testing.assert_array_equal(np.sort(first), np.arange(40))


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


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"day": pd.Timestamp("2024-01-01")}, "'day' (datetime64"),
        ({"city": "Oslo"}, "mixes text columns 'city' with numeric ones"),
    ],
)
def test_dataframe_with_unusable_columns_is_a_tpufit_error_naming_them(extra, named):
    x, y = tiny_data(20)
    table = frame(x).assign(**extra)
    tm = compiled()
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tm.fit(table, y, verbose=0)
    message = str(raised.value)
    assert named in message and "'f0'" not in message
    assert tm.traces == {}


def test_validation_split_of_a_dataframe_holds_out_its_last_rows():
    x, y = tiny_data(ROWS)
    tm = compiled()
    history = tm.fit(frame(x), pd.Series(y), batch_size=BATCH, validation_split=0.2, verbose=0)
    assert tm.global_step == 5  # 80 rows train
    twin = keras_twin(tm.model)
    expected = twin.evaluate(x[80:], y[80:], batch_size=20, return_dict=True, verbose=0)
    np.testing.assert_allclose(history.history["val_loss"][0], expected["loss"], rtol=1e-5)


def test_sample_weight_trains_step_for_step_like_keras_through_the_padded_batch():
    x, y = tiny_data(ROWS)
    weights = np.random.default_rng(0).uniform(0.1, 3.0, ROWS)
    tm = compiled()
    twin = keras_twin(tm.model)
    tm.fit(x, y, sample_weight=weights, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    twin.fit(x, y, sample_weight=weights, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert_same_weights(tm.model, twin)


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


Pair = collections.namedtuple("Pair", ["first", "second"])


def namedtuple_model():
    keras.utils.set_random_seed(0)
    x = keras.Input(shape=(3,), name="x")
    first = keras.layers.Dense(1, name="first", activation="sigmoid")(x)
    second = keras.layers.Dense(1, name="second", activation="sigmoid")(x)
    return keras.Model(x, Pair(first, second))


def test_namedtuple_targets_and_outputs_keep_their_type_with_keras_results():
    rng = np.random.default_rng(0)
    x = rng.random((9, 3), dtype=np.float32)
    y = Pair(rng.random((9, 1), dtype=np.float32), rng.random((9, 1), dtype=np.float32))
    results = []
    for attached in (False, True):
        model = namedtuple_model()
        if attached:
            tpufit.attach(model)
        model.compile(optimizer="sgd", loss=Pair("mse", "mae"), metrics=Pair(["mae"], ["mse"]))
        # Whole batches in fit: with a partial one, Keras's per-output loss logs of fit
        # differ from tpufit's for any multi-output model (a separate difference).
        train = (x[:8], Pair(y.first[:8], y.second[:8]))
        history = model.fit(*train, batch_size=2, epochs=2, shuffle=False, verbose=0)
        # tpufit's evaluate is Keras's on the whole data in one batch (docs/exactness.md).
        logs = model.evaluate(x, y, batch_size=4 if attached else 9, return_dict=True, verbose=0)
        results.append((history.history, logs, model.predict(x, batch_size=4, verbose=0), model))
    (history, logs, predicted, model), (our_history, our_logs, our_predicted, ours) = results
    assert set(our_history) == set(history)
    for name in history:
        np.testing.assert_allclose(our_history[name], history[name], rtol=1e-5, err_msg=name)
    assert_same_logs(our_logs, logs)
    assert type(our_predicted) is Pair and type(predicted) is Pair
    for mine, theirs in zip(our_predicted, predicted, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    assert_same_weights(ours, model)


@pytest.mark.parametrize("given", [False, True])
def test_none_for_an_optional_input_reaches_the_model_as_in_keras(given):
    rng = np.random.default_rng(0)
    x = {"x": rng.random((5, 2), dtype=np.float32), "o": None}
    if given:
        x["o"] = rng.random((5, 2), dtype=np.float32)
    y = rng.random((5, 2), dtype=np.float32)
    results = []
    for attached in (False, True):
        model = optional_input_model()
        if attached:
            tpufit.attach(model)
        model.compile(loss="mse", optimizer="sgd", metrics=["mae"])
        history = model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0).history
        # tpufit's evaluate is Keras's on the whole data in one batch (docs/exactness.md).
        logs = model.evaluate(x, y, batch_size=2 if attached else 5, return_dict=True, verbose=0)
        results.append((history, logs, model.predict(x, batch_size=2, verbose=0), model))
    (history, logs, predicted, model), (our_history, our_logs, our_predicted, ours) = results
    for name in history:
        np.testing.assert_allclose(our_history[name], history[name], rtol=1e-5, err_msg=name)
    assert_same_logs(our_logs, logs)
    np.testing.assert_allclose(our_predicted, predicted, rtol=1e-5, atol=1e-6)
    assert_same_weights(ours, model)


def test_none_for_a_required_input_is_an_error_naming_it_as_keras_does():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(1)(a + b))
    tpufit.attach(model)
    model.compile(loss="mse", optimizer="sgd")
    with pytest.raises(
        tpufit.InvalidArgumentError,
        match=r"`x\[1\]` is None but the model's input 'b' is not optional",
    ):
        model.fit([np.ones((4, 2)), None], np.ones((4, 1)), verbose=0)
    with pytest.raises(tpufit.InvalidArgumentError, match="'a' is not optional"):
        model.predict([None, np.ones((4, 2))], verbose=0)


def test_validation_split_keeps_none_for_an_optional_input_as_keras():
    rng = np.random.default_rng(1)
    x = {"x": rng.random((10, 2), dtype=np.float32), "o": None}
    y = rng.random((10, 2), dtype=np.float32)
    histories = []
    for attached in (False, True):
        model = optional_input_model()
        if attached:
            tpufit.attach(model)
        model.compile(loss="mse", optimizer="sgd")
        fitted = model.fit(x, y, batch_size=4, validation_split=0.2, shuffle=False, verbose=0)
        histories.append(fitted.history)
    assert set(histories[1]) == set(histories[0]) == {"loss", "val_loss"}
    for name, value in histories[0].items():
        np.testing.assert_allclose(histories[1][name], value, rtol=1e-5, err_msg=name)
