"""TPUModel end to end on the CPU: step accounting, exactness against plain Keras, traces."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    CLASSES,
    FEATURES,
    TinyGAN,
    compile_args,
    compiled,
    copy_model,
    host_only_model,
    own_step_model,
    tiny_data,
    tiny_model,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpufit

SLOW_EXAMPLES = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class BatchIndices(keras.callbacks.Callback):
    """Records the batch indices Keras callbacks receive, per epoch."""

    def __init__(self):
        super().__init__()
        self.begins: list[int] = []
        self.ends: list[int] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.begins.append(batch)

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(batch)


def test_fit_runs_loops_of_4_4_2_and_ends_at_step_20():
    x, y = tiny_data(640)
    tm = compiled(iterations_per_loop=4)
    seen = BatchIndices()
    tm.fit(x, y, batch_size=16, epochs=2, steps_per_epoch=10, callbacks=[seen], verbose=0)
    assert seen.begins == [0, 4, 8] * 2
    assert seen.ends == [3, 7, 9] * 2
    assert int(tm.model.optimizer.iterations) == 20
    assert tm.global_step == 20


def test_steps_per_epoch_beyond_the_data_ends_each_epoch_with_its_pass_as_in_keras():
    x, y = tiny_data(40)  # 3 steps a pass
    tm = compiled(iterations_per_loop=4)
    with pytest.warns(UserWarning, match="ran out of data") as caught:
        history = tm.fit(x, y, batch_size=16, epochs=2, steps_per_epoch=10, verbose=0)
    assert int(tm.model.optimizer.iterations) == tm.global_step == 2 * 3
    assert history.epoch == [0, 1] and len(caught) == 2


@pytest.mark.parametrize("drop_remainder, steps", [(False, 16), (True, 15)])
def test_partial_last_batch_is_a_step_unless_dropped(drop_remainder, steps):
    x, y = tiny_data(1001)
    tm = compiled(iterations_per_loop=5)
    history = tm.fit(x, y, batch_size=64, epochs=2, drop_remainder=drop_remainder, verbose=0)
    assert tm.global_step == 2 * steps
    assert len(history.history["loss"]) == 2


def test_training_matches_keras_step_for_step_including_the_partial_batch():
    x, y = tiny_data(100)
    reference = tiny_model()
    tm = compiled(copy_model(reference), iterations_per_loop=3)
    reference.compile(**compile_args())
    ours = tm.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    theirs = reference.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    for mine, keras_weight in zip(tm.model.get_weights(), reference.get_weights(), strict=False):
        np.testing.assert_allclose(mine, keras_weight, rtol=1e-5, atol=1e-6)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(ours.history[key], theirs.history[key], rtol=1e-5)


def test_fit_returns_history_with_validation_entries():
    x, y = tiny_data(200)
    tm = compiled()
    history = tm.fit(x, y, batch_size=32, epochs=3, validation_data=(x[:50], y[:50]), verbose=0)
    assert isinstance(history, keras.callbacks.History)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2]
    reference = copy_model(tm.model)
    reference.compile(**compile_args())
    expected = reference.evaluate(x[:50], y[:50], batch_size=50, return_dict=True, verbose=0)
    np.testing.assert_allclose(history.history["val_loss"][-1], expected["loss"], rtol=1e-5)


@SLOW_EXAMPLES
@given(
    rows=st.integers(1, 300),
    batch_size=st.integers(1, 64),
    iterations_per_loop=st.integers(1, 5) | st.sampled_from(["auto", "0.01s"]),
)
def test_predict_returns_exactly_the_rows_of_a_direct_call(rows, batch_size, iterations_per_loop):
    model = tiny_model()
    x, _ = tiny_data(rows, seed=rows)
    tm = tpufit.TPUModel(model, iterations_per_loop=iterations_per_loop)
    predictions = tm.predict(x, batch_size=batch_size, verbose=0)
    assert predictions.shape == (rows, CLASSES)
    np.testing.assert_allclose(predictions, model(x, training=False), atol=1e-5)


@SLOW_EXAMPLES
@given(
    rows=st.integers(1, 300),
    batch_size=st.integers(1, 64),
    iterations_per_loop=st.integers(1, 5) | st.sampled_from(["auto", "0.01s"]),
)
def test_evaluate_equals_keras_on_the_whole_data_in_one_batch(
    rows, batch_size, iterations_per_loop
):
    x, y = tiny_data(rows, seed=rows)
    weights = np.random.default_rng(rows).uniform(0.1, 2.0, rows).astype("float32")
    model = tiny_model()
    tm = tpufit.TPUModel(model, iterations_per_loop=iterations_per_loop)
    args = compile_args() | {"weighted_metrics": ["accuracy"]}
    tm.compile(**args)
    ours = tm.evaluate(
        x, y, sample_weight=weights, batch_size=batch_size, return_dict=True, verbose=0
    )
    reference = copy_model(model)
    reference.compile(**args)
    theirs = reference.evaluate(
        x, y, sample_weight=weights, batch_size=rows, return_dict=True, verbose=0
    )
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_evaluate_returns_keras_order_as_list_and_scalar_for_loss_only():
    x, y = tiny_data(70)
    tm = compiled()
    reference = copy_model(tm.model)
    reference.compile(**compile_args())
    assert np.allclose(
        tm.evaluate(x, y, batch_size=16, verbose=0),
        reference.evaluate(x, y, batch_size=70, verbose=0),
        rtol=1e-5,
    )
    loss_only = tpufit.TPUModel(tiny_model())
    loss_only.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert isinstance(loss_only.evaluate(x, y, batch_size=16, verbose=0), float)


def test_padded_last_batch_and_new_row_counts_do_not_retrace():
    x, y = tiny_data(300)
    tm = compiled()
    tm.fit(x[:100], y[:100], batch_size=32, epochs=2, verbose=0)
    tm.evaluate(x[:77], y[:77], batch_size=32, verbose=0)
    tm.evaluate(x[:45], y[:45], batch_size=32, verbose=0)
    tm.predict(x[:77], batch_size=32, verbose=0)
    tm.predict(x[:5], batch_size=32, verbose=0)
    tm.predict(x, batch_size=32, verbose=0)
    assert tm.traces == {"train": 1, "eval": 1, "predict": 1}


def test_multi_input_multi_output_dicts_are_exact_with_weights_and_regularizers():
    keras.utils.set_random_seed(1)
    a, b = keras.Input((5,), name="a"), keras.Input((3,), name="b")
    hidden = keras.layers.Dense(
        8, activation="relu", kernel_regularizer=keras.regularizers.l2(0.01)
    )(keras.layers.Concatenate()([a, b]))
    outputs = {
        "cls": keras.layers.Dense(CLASSES, name="cls")(hidden),
        "reg": keras.layers.Dense(1, name="reg")(hidden),
    }
    model = keras.Model({"a": a, "b": b}, outputs)
    rng = np.random.default_rng(0)
    rows = 203
    x = {"a": rng.normal(size=(rows, 5)), "b": rng.normal(size=(rows, 3))}
    y = {"cls": rng.integers(0, CLASSES, rows), "reg": rng.normal(size=(rows, 1))}
    weights = rng.uniform(0.1, 1.0, rows)
    args = dict(
        optimizer="sgd",
        loss={"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"},
        loss_weights={"cls": 1.0, "reg": 0.5},
        metrics={"cls": ["accuracy"], "reg": ["mae"]},
        weighted_metrics={"cls": ["accuracy"]},
    )
    tm = tpufit.TPUModel(model, iterations_per_loop=3)
    tm.compile(**args)
    tm.fit(x, y, batch_size=16, epochs=1, verbose=0)
    ours = tm.evaluate(x, y, sample_weight=weights, batch_size=16, return_dict=True, verbose=0)
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    reference.compile(**args)
    theirs = reference.evaluate(
        x, y, sample_weight=weights, batch_size=rows, return_dict=True, verbose=0
    )
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, err_msg=name)
    predictions = tm.predict(x, batch_size=32, verbose=0)
    for name, value in model(x).items():
        np.testing.assert_allclose(predictions[name], value, atol=1e-5)


class SubclassedClassifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(CLASSES)

    def call(self, inputs, training=False):
        return self.out(self.hidden(inputs))


def test_subclassed_model_trains_and_predicts_exactly():
    keras.utils.set_random_seed(0)
    model = SubclassedClassifier()
    x, y = tiny_data(90)
    tm = compiled(model)
    tm.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(tm.predict(x, batch_size=16, verbose=0), model(x), atol=1e-5)
    assert tm.global_step == 6


def test_own_train_step_sees_data_as_given_and_partial_batch_unpadded():
    model = own_step_model()
    x, _ = tiny_data(100)
    y = x.sum(axis=1, keepdims=True)
    tm = tpufit.TPUModel(model, iterations_per_loop=2)
    tm.compile(optimizer=keras.optimizers.SGD(0.01))
    tm.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    assert tm.global_step == 8
    assert {s[:2] for s in model.seen} == {("tuple", 2)}
    assert {s[2] for s in model.seen} == {32, 4}  # full batches, then the unpadded tail
    reference = own_step_model()
    reference.compile(optimizer=keras.optimizers.SGD(0.01))
    reference.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=False):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    ours = tm.evaluate(x[:77], y[:77], batch_size=32, return_dict=True, verbose=0)
    theirs = reference.evaluate(x[:77], y[:77], batch_size=77, return_dict=True, verbose=0)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, err_msg=name)


def test_gan_with_its_own_compile_and_two_optimizers_is_looped():
    keras.utils.set_random_seed(0)
    gan = TinyGAN()
    tm = tpufit.TPUModel(gan, iterations_per_loop=5)
    tm.compile(
        d_optimizer=keras.optimizers.Adam(1e-3),
        g_optimizer=keras.optimizers.Adam(1e-3),
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    x, _ = tiny_data(300)
    before = [w.copy() for w in gan.generator.get_weights()]
    history = tm.fit(tf.data.Dataset.from_tensor_slices(x).batch(32), epochs=2, verbose=0)
    assert int(gan.d_optimizer.iterations) == int(gan.g_optimizer.iterations) == 20
    assert set(history.history) == {"d_loss", "g_loss"}
    assert any(
        not np.allclose(a, b) for a, b in zip(before, gan.generator.get_weights(), strict=False)
    )


def test_tf_data_input_with_partial_batch_is_exact():
    x, y = tiny_data(150)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    tm = compiled()
    tm.fit(dataset, epochs=2, verbose=0)
    assert tm.global_step == 10
    reference = copy_model(tm.model)
    reference.compile(**compile_args())
    ours = tm.evaluate(dataset, return_dict=True, verbose=0)
    theirs = reference.evaluate(x, y, batch_size=150, return_dict=True, verbose=0)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5)
    only_x = tf.data.Dataset.from_tensor_slices(x).batch(32)
    np.testing.assert_allclose(tm.predict(only_x, verbose=0), tm.model(x), atol=1e-5)


def test_dataset_of_unknown_length_runs_to_the_stop_signal():
    x, y = tiny_data(150)
    keep = np.arange(150) % 3 != 0
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y, np.arange(150)))
        .filter(lambda a, b, i: i % 3 != 0)
        .map(lambda a, b, i: (a, b))
        .batch(16)
    )
    assert int(dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    tm = compiled(iterations_per_loop=3)
    predictions = tm.predict(dataset.map(lambda a, b: a), verbose=0)
    np.testing.assert_allclose(predictions, tm.model(x[keep]), atol=1e-5)
    reference = copy_model(tm.model)
    reference.compile(**compile_args())
    ours = tm.evaluate(dataset, return_dict=True, verbose=0)
    theirs = reference.evaluate(x[keep], y[keep], batch_size=100, return_dict=True, verbose=0)
    np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-5)
    tm.fit(dataset, epochs=1, verbose=0)
    assert tm.global_step == 7  # 100 rows at 16: counted once, the last batch padded


def test_jit_auto_falls_back_with_one_warning_naming_the_reason():
    model = host_only_model()
    x, _ = tiny_data(20)
    tm = tpufit.TPUModel(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictions = tm.predict(x, batch_size=8, verbose=0)
    messages = [str(w.message) for w in caught if "tpufit" in str(w.message)]
    assert (
        len(messages) == 1 and "without XLA" in messages[0] and "XLA cannot compile" in messages[0]
    )
    np.testing.assert_allclose(predictions, model(x), atol=1e-5)
    strict = tpufit.TPUModel(model)
    strict.compile(optimizer="sgd", loss="mse", jit_compile=True)
    with pytest.raises(tpufit.InvalidArgumentError, match="jit_compile"):
        strict.evaluate(x, np.zeros((20, 2)), batch_size=8, verbose=0)


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda tm, x, y: tm.fit(x, y[:-1], verbose=0), tpufit.InvalidArgumentError, ["50", "49"]),
        (
            lambda tm, x, y: tm.fit(x, y, batch_size=0, verbose=0),
            tpufit.InvalidArgumentError,
            ["batch_size=0"],
        ),
        (
            lambda tm, x, y: tm.fit(x, y, batch_size=2.5, verbose=0),
            tpufit.InvalidArgumentError,
            ["batch_size=2.5"],
        ),
        (lambda tm, x, y: tm.fit(x[:0], y[:0], verbose=0), tpufit.InvalidArgumentError, ["empty"]),
        (
            lambda tm, x, y: tm.fit(x, y, epochs=0, verbose=0),
            tpufit.InvalidArgumentError,
            ["epochs=0"],
        ),
        (
            lambda tm, x, y: tm.fit(x, y, batch_size=64, drop_remainder=True, verbose=0),
            tpufit.InvalidArgumentError,
            ["drop_remainder"],
        ),
        (
            lambda tm, x, y: tm.evaluate(x, y[:10], verbose=0),
            tpufit.InvalidArgumentError,
            ["50", "10"],
        ),
        (
            lambda tm, x, y: tm.predict(x, batch_size=-1, verbose=0),
            tpufit.InvalidArgumentError,
            ["batch_size=-1"],
        ),
    ],
)
def test_bad_input_fails_before_any_device_work_and_keeps_weights(call, error, words):
    x, y = tiny_data(50)
    tm = compiled()
    before = weights_of(tm.model)
    with pytest.raises(error) as raised:
        call(tm, x, y)
    for word in words:
        assert word in str(raised.value)
    assert tm.traces == {}
    for a, b in zip(before, tm.model.get_weights(), strict=False):
        np.testing.assert_array_equal(a, b)


def test_fit_and_evaluate_before_compile_say_what_to_do():
    x, y = tiny_data(10)
    tm = tpufit.TPUModel(tiny_model())
    for call in (lambda: tm.fit(x, y, verbose=0), lambda: tm.evaluate(x, y, verbose=0)):
        with pytest.raises(tpufit.NotCompiledError, match="compile"):
            call()
    assert isinstance(tpufit.NotCompiledError("x"), RuntimeError)


@pytest.mark.parametrize("value", [0, -5, 2.0, "many", None])
def test_bad_iterations_per_loop_is_rejected_with_its_value(value):
    with pytest.raises(tpufit.InvalidArgumentError, match="iterations_per_loop"):
        tpufit.TPUModel(tiny_model(), iterations_per_loop=value)


def test_a_model_that_is_not_keras_3_is_rejected():
    with pytest.raises(tpufit.InvalidTypeError, match="Keras 3"):
        tpufit.TPUModel(object())
    with pytest.raises(TypeError):
        tpufit.TPUModel(lambda x: x)


def test_version_is_exposed():
    assert tpufit.__version__.count(".") == 2


class Autoencoder(keras.Model):
    """Like the keras.io VAE: `fit(x)` with no targets, the step uses `data` as `x`."""

    def __init__(self):
        super().__init__()
        self.code = keras.layers.Dense(2)
        self.back = keras.layers.Dense(FEATURES)
        self.tracker = keras.metrics.Mean(name="loss")
        self.received: list[str] = []

    def call(self, x):
        return self.back(self.code(x))

    def train_step(self, data):
        self.received.append(type(data).__name__)
        with tf.GradientTape() as tape:
            loss = keras.ops.mean((self(data) - data) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result()}

    @property
    def metrics(self):
        return [self.tracker]


def test_fit_without_targets_hands_the_step_bare_x_as_keras_does():
    keras.utils.set_random_seed(0)
    model = Autoencoder()
    x, _ = tiny_data(40)
    tm = tpufit.TPUModel(model, iterations_per_loop=2)
    tm.compile(optimizer="adam")
    history = tm.fit(x, batch_size=16, epochs=2, verbose=0)
    assert model.received and all(name != "tuple" for name in model.received)
    assert len(history.history["loss"]) == 2
    assert tm.global_step == 6


def test_an_unbuilt_model_is_built_on_its_first_batch():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    x, _ = tiny_data(30)
    tm = tpufit.TPUModel(model)
    tm.compile(optimizer="sgd", loss="mse")
    tm.fit(x, np.zeros((30, 2)), batch_size=8, verbose=0)
    assert tm.global_step == 4
    np.testing.assert_allclose(tm.predict(x, batch_size=8, verbose=0), model(x), atol=1e-5)


def test_validation_dataset_keeps_its_own_batches_and_split_holds_out_the_tail():
    x, y = tiny_data(100)
    tm = compiled()
    dataset = tf.data.Dataset.from_tensor_slices((x[:30], y[:30])).batch(7)
    history = tm.fit(x, y, batch_size=32, validation_data=dataset, verbose=0)
    reference = copy_model(tm.model)
    reference.compile(**compile_args())
    expected = reference.evaluate(x[:30], y[:30], batch_size=30, return_dict=True, verbose=0)
    np.testing.assert_allclose(history.history["val_loss"][0], expected["loss"], rtol=1e-5)
    split = compiled()
    history = split.fit(x, y, batch_size=16, validation_split=0.2, verbose=0)
    assert split.global_step == 5  # 80 rows train, the last 20 validate
    reference = copy_model(split.model)
    reference.compile(**compile_args())
    expected = reference.evaluate(x[80:], y[80:], batch_size=20, return_dict=True, verbose=0)
    np.testing.assert_allclose(history.history["val_loss"][0], expected["loss"], rtol=1e-5)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 120),
    batch_size=st.integers(1, 32),
    iterations_per_loop=st.integers(1, 7),
    epochs=st.integers(1, 3),
    steps_per_epoch=st.one_of(st.none(), st.integers(1, 9)),
)
def test_fit_runs_exactly_the_steps_asked_and_reports_every_loop(
    rows, batch_size, iterations_per_loop, epochs, steps_per_epoch
):
    x, y = tiny_data(rows, seed=rows)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=iterations_per_loop)
    tm.compile(**compile_args())
    seen = BatchIndices()
    tm.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=[seen],
        verbose=0,
    )
    # As in Keras, an epoch takes its steps from the current pass and ends with it.
    per_pass, position, lengths = -(-rows // batch_size), 0, []
    for _ in range(epochs):
        lengths.append(min(steps_per_epoch or per_pass, per_pass - position))
        position = (position + lengths[-1]) % per_pass
    assert int(tm.model.optimizer.iterations) == tm.global_step == sum(lengths)
    firsts = [first for n in lengths for first in range(0, n, iterations_per_loop)]
    lasts = [
        min(f + iterations_per_loop, n) - 1
        for n in lengths
        for f in range(0, n, iterations_per_loop)
    ]
    assert seen.begins == firsts
    assert seen.ends == lasts


def test_two_inputs_and_two_outputs_given_as_tuples():
    keras.utils.set_random_seed(2)
    a, b = keras.Input((3,)), keras.Input((2,))
    hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], [keras.layers.Dense(1)(hidden), keras.layers.Dense(2)(hidden)])
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(45, 3)), rng.normal(size=(45, 2)))
    y = (rng.normal(size=(45, 1)), rng.normal(size=(45, 2)))
    tm = tpufit.TPUModel(model, iterations_per_loop=2)
    tm.compile(optimizer="sgd", loss=["mse", "mae"], metrics=[["mae"], ["mse"]])
    tm.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert tm.global_step == 6
    ours = tm.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    reference.compile(optimizer="sgd", loss=["mse", "mae"], metrics=[["mae"], ["mse"]])
    theirs = reference.evaluate(x, y, batch_size=45, return_dict=True, verbose=0)
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, err_msg=name)
    first, second = tm.predict(x, batch_size=16, verbose=0)
    expected = model(x)
    np.testing.assert_allclose(first, expected[0], atol=1e-5)
    np.testing.assert_allclose(second, expected[1], atol=1e-5)


def test_an_endless_dataset_needs_steps_to_evaluate_or_predict():
    x, y = tiny_data(32)
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    tm = compiled()
    for call in (
        lambda: tm.evaluate(endless, verbose=0),
        lambda: tm.predict(endless.map(lambda a, b: a), verbose=0),
    ):
        with pytest.raises(tpufit.InvalidArgumentError, match="steps"):
            call()
    assert tm.predict(endless.map(lambda a, b: a), steps=3, verbose=0).shape == (24, CLASSES)
    assert isinstance(tm.evaluate(endless, steps=2, return_dict=True, verbose=0)["loss"], float)
