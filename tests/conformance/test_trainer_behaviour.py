"""Conformance: what Keras's own trainer tests check, run through `attach`, gives Keras's results.

Our own cases after `keras/src/trainers/trainer_test.py`: history keys and
values, validation (split, tuple, dataset, frequency, weights), class and
sample weights, `initial_epoch`, `steps_per_epoch`, `evaluate`'s list and dict,
multi-input and multi-output models (metrics per output, `loss_weights`, a
`None` loss), input dtypes, input kinds (arrays, pandas, tf.data, generators,
`PyDataset`) and batch sizes with a partial last batch. Each case is plain Keras
code run once through `tpufit.attach` and once in plain Keras, from the same
weights, and compared.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import FEATURES
from like_keras import assert_same_values, evaluate_both, fit_both, predict_both, twins

ROWS = 100
CLASSES = 3


def features(rows: int = ROWS, seed: int = 1, width: int = FEATURES) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, width)).astype("float32")


def labels(rows: int = ROWS, seed: int = 2, count: int = CLASSES) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, count, size=rows)


def classifier() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )


def classifier_compile(weighted: bool = False):
    """Fresh compile arguments (no metric object is shared by the twins)."""

    def compile_kwargs():
        weighted_metrics = [keras.metrics.SparseCategoricalAccuracy()] if weighted else None
        return dict(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            weighted_metrics=weighted_metrics,
        )

    return compile_kwargs


def classifier_twins():
    return twins(classifier, classifier_compile())


# --- History and validation ------------------------------------------------------------------


def test_history_holds_every_epochs_loss_metrics_and_validation_entries_as_keras():
    x, y = features(), labels()
    ours, theirs, _ = classifier_twins()
    mine, _ = fit_both(
        ours,
        theirs,
        x,
        y,
        batch_size=16,
        epochs=3,
        validation_data=(features(30, 3), labels(30, 4)),
    )
    assert sorted(mine.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert mine.epoch == [0, 1, 2] and ours.history is mine


@pytest.mark.parametrize("split", [0.2, 0.33])
def test_validation_split_holds_out_the_same_last_rows_as_keras(split):
    ours, theirs, _ = classifier_twins()
    fit_both(ours, theirs, features(), labels(), batch_size=16, epochs=2, validation_split=split)


def test_validation_data_as_a_dataset_validates_as_keras():
    validation = tf.data.Dataset.from_tensor_slices((features(30, 3), labels(30, 4))).batch(8)
    ours, theirs, _ = classifier_twins()
    fit_both(
        ours, theirs, features(), labels(), batch_size=16, epochs=2, validation_data=validation
    )


def test_validation_data_with_sample_weights_weights_the_validation_loss_as_keras():
    weights = np.linspace(0.0, 2.0, 30).astype("float32")
    ours, theirs, _ = twins(classifier, classifier_compile(weighted=True))
    fit_both(
        ours,
        theirs,
        features(),
        labels(),
        batch_size=16,
        epochs=2,
        validation_data=(features(30, 3), labels(30, 4), weights),
    )


def test_validation_freq_and_batch_size_validate_as_keras():
    ours, theirs, _ = classifier_twins()
    mine, _ = fit_both(
        ours,
        theirs,
        features(),
        labels(),
        batch_size=16,
        epochs=4,
        validation_data=(features(30, 3), labels(30, 4)),
        validation_freq=2,
        validation_batch_size=7,
    )
    assert len(mine.history["val_loss"]) == 2


# --- Weights, epochs, steps ------------------------------------------------------------------


def test_class_weight_weights_the_training_loss_as_keras():
    ours, theirs, _ = classifier_twins()
    fit_both(
        ours, theirs, features(), labels(), batch_size=16, epochs=2, class_weight={0: 3.0, 2: 0.5}
    )


def test_sample_weight_weights_the_loss_and_the_weighted_metrics_as_keras():
    weights = np.random.default_rng(9).uniform(0, 2, size=ROWS).astype("float32")
    ours, theirs, _ = twins(classifier, classifier_compile(weighted=True))
    mine, _ = fit_both(
        ours, theirs, features(), labels(), sample_weight=weights, batch_size=16, epochs=2
    )
    assert "sparse_categorical_accuracy" in mine.history
    evaluate_both(
        ours, theirs, features(), labels(), sample_weight=weights, batch_size=16, return_dict=True
    )


def test_initial_epoch_numbers_the_epochs_and_trains_only_the_rest_as_keras():
    ours, theirs, _ = classifier_twins()
    mine, _ = fit_both(ours, theirs, features(), labels(), batch_size=16, epochs=4, initial_epoch=2)
    assert mine.epoch == [2, 3]


def test_steps_per_epoch_over_arrays_continues_where_the_last_epoch_stopped_as_keras():
    # 5 batches of 20, 2 steps an epoch: Keras reads batches 0-1, then 2-3 (only a
    # `steps_per_epoch` beyond the data's end differs: tpufit cycles, Keras stops).
    ours, theirs, _ = classifier_twins()
    fit_both(ours, theirs, features(), labels(), batch_size=20, epochs=2, steps_per_epoch=2)


def test_steps_per_epoch_over_a_repeated_dataset_continues_across_epochs_as_keras():
    dataset = tf.data.Dataset.from_tensor_slices((features(), labels())).batch(16).repeat()
    ours, theirs, tm = classifier_twins()
    fit_both(ours, theirs, dataset, epochs=3, steps_per_epoch=4)
    assert tm.global_step == 12


# --- evaluate's return values ----------------------------------------------------------------


def zero(y_true, y_pred):
    return keras.ops.zeros_like(y_pred[:, 0])


def one(y_true, y_pred):
    return keras.ops.ones_like(y_pred[:, 0])


@pytest.mark.parametrize("order", [(zero, one), (one, zero)], ids=["zero_one", "one_zero"])
def test_evaluate_returns_a_list_in_the_compiled_metrics_order_as_keras(order):
    ours, theirs, _ = twins(
        classifier,
        lambda: dict(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=list(order),
        ),
    )
    values = evaluate_both(ours, theirs, features(), labels(), batch_size=16)
    assert values[1:] == [float(fn is one) for fn in order]
    evaluate_both(ours, theirs, features(), labels(), batch_size=16, return_dict=True)


def test_evaluate_with_steps_reads_only_those_batches_of_an_endless_dataset_as_keras():
    dataset = tf.data.Dataset.from_tensor_slices((features(), labels())).batch(16).repeat()
    ours, theirs, _ = classifier_twins()
    evaluate_both(ours, theirs, dataset, steps=3, return_dict=True)


# --- Several inputs and outputs --------------------------------------------------------------


# Keras's per-output loss entries (`scores_loss`) weight each batch's mean by the batch's
# *static* size, which its traced step does not know: in graph mode a partial last
# batch counts as much as a full one. tpufit counts rows, as Keras does when it runs
# eagerly (and on the whole data in one batch), so the multi-output cases compare
# with Keras's eager run. The total `loss` is row-weighted in both Keras modes.
EAGER_KERAS = {"run_eagerly": True}


def two_output_model(structure: str) -> keras.Model:
    inputs = keras.Input((FEATURES,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    scores = keras.layers.Dense(CLASSES, name="scores")(hidden)
    value = keras.layers.Dense(1, name="value")(hidden)
    outputs = {"scores": scores, "value": value} if structure == "dict" else [scores, value]
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("structure", ["dict", "list"])
def test_metrics_and_loss_weights_per_output_of_a_two_output_model_as_keras(structure):
    def per_output(scores, value):
        return {"scores": scores, "value": value} if structure == "dict" else [scores, value]

    def compile_kwargs():
        return dict(
            optimizer=keras.optimizers.SGD(0.05),
            loss=per_output(keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"),
            metrics=per_output(["accuracy"], ["mae", "mse"]),
            loss_weights=per_output(0.3, 2.0),
        )

    x, y = features(), labels()
    targets = per_output(y, x[:, :1] * 2.0)
    ours, theirs, _ = twins(
        lambda: two_output_model(structure), compile_kwargs, keras_compile=EAGER_KERAS
    )
    mine, _ = fit_both(ours, theirs, x, targets, batch_size=16, epochs=2)
    assert {"scores_loss", "value_loss", "scores_accuracy", "value_mae"} <= set(mine.history)
    evaluate_both(ours, theirs, x, targets, batch_size=16, return_dict=True)
    evaluate_both(ours, theirs, x, targets, batch_size=16)
    predictions = predict_both(ours, theirs, x, batch_size=16)
    assert isinstance(predictions, dict if structure == "dict" else list)


def test_an_output_without_a_loss_is_left_out_of_training_as_keras():
    def compile_kwargs():
        return dict(optimizer="sgd", loss=[None, "mse"], metrics=[None, ["mae"]])

    x = features()
    ours, theirs, _ = twins(
        lambda: two_output_model("list"), compile_kwargs, keras_compile=EAGER_KERAS
    )
    fit_both(ours, theirs, x, [labels(), x[:, :1]], batch_size=16, epochs=2)
    evaluate_both(ours, theirs, x, [labels(), x[:, :1]], batch_size=16, return_dict=True)


def test_per_output_sample_weights_weight_each_outputs_loss_as_keras():
    def compile_kwargs():
        return dict(
            optimizer="sgd",
            loss={
                "scores": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "value": "mse",
            },
        )

    rng = np.random.default_rng(4)
    weights = {"scores": rng.uniform(size=ROWS), "value": rng.uniform(size=ROWS)}
    x = features()
    targets = {"scores": labels(), "value": x[:, :1]}
    ours, theirs, _ = twins(
        lambda: two_output_model("dict"), compile_kwargs, keras_compile=EAGER_KERAS
    )
    fit_both(ours, theirs, x, targets, sample_weight=weights, batch_size=16, epochs=2)
    evaluate_both(ours, theirs, x, targets, sample_weight=weights, batch_size=16, return_dict=True)


@pytest.mark.parametrize("structure", ["dict", "list"])
def test_a_two_input_model_takes_its_inputs_as_keras(structure):
    def build():
        wide, narrow = keras.Input((FEATURES,), name="wide"), keras.Input((2,), name="narrow")
        merged = keras.layers.Concatenate()([keras.layers.Dense(4)(wide), narrow])
        inputs = {"wide": wide, "narrow": narrow} if structure == "dict" else [wide, narrow]
        return keras.Model(inputs, keras.layers.Dense(CLASSES)(merged))

    wide, narrow = features(), features(width=2, seed=7)
    x = {"wide": wide, "narrow": narrow} if structure == "dict" else [wide, narrow]
    ours, theirs, _ = twins(build, classifier_compile())
    fit_both(ours, theirs, x, labels(), batch_size=16, epochs=2)
    evaluate_both(ours, theirs, x, labels(), batch_size=16, return_dict=True)
    predict_both(ours, theirs, x, batch_size=16)


# --- Losses, dtypes, layers ------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["sparse_categorical", "categorical", "binary"])
def test_accuracy_resolves_to_the_losss_accuracy_as_keras(loss):
    y = labels()
    if loss == "categorical":
        y = keras.utils.to_categorical(y, CLASSES)
    if loss == "binary":
        y = (y[:, None] == 0).astype("float32")

    def build():
        inputs = keras.Input((FEATURES,))
        activation = "sigmoid" if loss == "binary" else "softmax"
        units = 1 if loss == "binary" else CLASSES
        return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(inputs))

    def compile_kwargs():
        return dict(optimizer="sgd", loss=f"{loss}_crossentropy", metrics=["accuracy"])

    ours, theirs, _ = twins(build, compile_kwargs)
    fit_both(ours, theirs, features(), y, batch_size=16, epochs=2)
    evaluate_both(ours, theirs, features(), y, batch_size=16, return_dict=True)


def embedder() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            keras.layers.Embedding(24, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES),
        ]
    )


@pytest.mark.parametrize("dtype", ["int64", "float64"])
def test_inputs_of_another_dtype_are_converted_as_keras(dtype):
    if dtype == "int64":  # Token ids for an int32 input.
        x, build = labels(seed=5, count=20)[:, None] + np.arange(4), embedder
    else:
        x, build = features().astype("float64"), classifier
    assert x.dtype == dtype
    ours, theirs, _ = twins(build, classifier_compile())
    fit_both(ours, theirs, x, labels(), batch_size=16, epochs=2)
    evaluate_both(ours, theirs, x, labels(), batch_size=16)
    predict_both(ours, theirs, x, batch_size=16)


OPTIMIZERS = {
    "gradient_accumulation": lambda: keras.optimizers.Adam(0.01, gradient_accumulation_steps=3),
    "learning_rate_schedule": lambda: keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=5, decay_rate=0.5)
    ),
    "global_clipnorm": lambda: keras.optimizers.Adam(0.01, global_clipnorm=0.1),
    "ema": lambda: keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_options_train_as_keras(optimizer):
    def compile_kwargs():
        arguments = classifier_compile()()
        return {**arguments, "optimizer": OPTIMIZERS[optimizer]()}

    ours, theirs, _ = twins(classifier, compile_kwargs)
    fit_both(ours, theirs, features(), labels(), batch_size=16, epochs=2)
    evaluate_both(ours, theirs, features(), labels(), batch_size=16)


def test_a_kernel_constraint_is_applied_after_every_step_as_keras():
    def build():
        return keras.Sequential(
            [keras.Input((FEATURES,)), keras.layers.Dense(CLASSES, kernel_constraint="non_neg")]
        )

    ours, theirs, _ = twins(build, classifier_compile())
    fit_both(ours, theirs, features(), labels(), batch_size=16, epochs=2)
    assert keras.ops.convert_to_numpy(ours.layers[0].kernel).min() >= 0.0


class TrainingOnly(keras.layers.Layer):
    """Passes its input on in training, zeros in inference: `training` must reach it."""

    def call(self, x, training=None):
        return x if training else keras.ops.zeros_like(x)


def test_layers_get_the_training_argument_keras_gives_them():
    def build():
        return keras.Sequential(
            [keras.Input((FEATURES,)), keras.layers.Dense(CLASSES), TrainingOnly()]
        )

    ours, theirs, _ = twins(build, classifier_compile())
    fit_both(ours, theirs, features(), labels(), batch_size=16, epochs=2)
    values = evaluate_both(ours, theirs, features(), labels(), batch_size=16, return_dict=True)
    assert values["loss"] == pytest.approx(np.log(CLASSES))  # zero logits in inference
    assert not predict_both(ours, theirs, features(), batch_size=16).any()


def test_recompiling_changes_the_metrics_and_keeps_the_weights_as_keras():
    ours, theirs, _ = classifier_twins()
    fit_both(ours, theirs, features(), labels(), batch_size=16, epochs=1)
    for model in (ours, theirs):
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")],
        )
    mine, _ = fit_both(ours, theirs, features(), labels(), batch_size=16, epochs=2)
    assert sorted(mine.history) == ["loss", "top2"]


# --- Input kinds and batch sizes -------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, 32, 150])
def test_any_batch_size_with_a_partial_last_batch_trains_as_keras(batch_size):
    ours, theirs, _ = classifier_twins()
    fit_both(ours, theirs, features(), labels(), batch_size=batch_size, epochs=2)
    evaluate_both(ours, theirs, features(), labels(), batch_size=batch_size, return_dict=True)
    predict_both(ours, theirs, features(), batch_size=batch_size)


def test_tf_data_with_a_partial_last_batch_trains_evaluates_and_predicts_as_keras():
    dataset = tf.data.Dataset.from_tensor_slices((features(), labels())).batch(16)
    ours, theirs, _ = classifier_twins()
    fit_both(ours, theirs, dataset, epochs=2)
    evaluate_both(ours, theirs, dataset, return_dict=True)
    predict_both(ours, theirs, dataset.map(lambda x, y: x))


def batches(x, y=None, size: int = 16):
    for start in range(0, len(x), size):
        yield (
            (x[start : start + size],)
            if y is None
            else (x[start : start + size], y[start : start + size])
        )


def test_a_python_generator_trains_evaluates_and_predicts_as_keras():
    # One epoch: Keras reads a generator once (tpufit would repeat it in memory).
    x, y = features(), labels()
    ours, theirs, _ = classifier_twins()
    mine = ours.fit(batches(x, y), epochs=1, verbose=0)
    keras_history = theirs.fit(batches(x, y), epochs=1, verbose=0)
    assert_same_values(mine.history, keras_history.history)
    assert_same_values(
        ours.evaluate(batches(x, y), verbose=0), theirs.evaluate(batches(x, y), verbose=0)
    )
    assert_same_values(ours.predict(batches(x), verbose=0), theirs.predict(batches(x), verbose=0))


class Rows(keras.utils.PyDataset):
    """Batches of 16 rows (the last one of 4), with or without targets."""

    def __init__(self, x, y=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.x) // 16)

    def __getitem__(self, index):
        rows = slice(index * 16, (index + 1) * 16)
        return (self.x[rows],) if self.y is None else (self.x[rows], self.y[rows])


def test_a_py_dataset_trains_evaluates_and_predicts_as_keras():
    x, y = features(), labels()
    ours, theirs, _ = classifier_twins()
    fit_both(ours, theirs, Rows(x, y), epochs=2)
    evaluate_both(ours, theirs, Rows(x, y), return_dict=True)
    predict_both(ours, theirs, Rows(x))


def test_pandas_frames_and_series_train_evaluate_and_predict_as_keras():
    x = pd.DataFrame(features(), columns=[f"f{i}" for i in range(FEATURES)])
    y = pd.Series(labels())
    ours, theirs, _ = classifier_twins()
    fit_both(ours, theirs, x, y, batch_size=16, epochs=2, validation_split=0.2)
    evaluate_both(ours, theirs, x, y, batch_size=16, return_dict=True)
    predict_both(ours, theirs, x, batch_size=16)


@pytest.mark.parametrize("source", ["dataset", "tensor"])
def test_string_inputs_through_a_lookup_layer_train_evaluate_and_predict_as_keras(source):
    # Keras takes strings as tensors or in a tf.data.Dataset (numpy str arrays fail in Keras).
    words = tf.constant(np.array(["red", "green", "blue", "grey"])[labels(count=4)][:, None])
    dataset = tf.data.Dataset.from_tensor_slices((words, labels())).batch(16)

    def build():
        return keras.Sequential(
            [
                keras.Input((1,), dtype="string"),
                keras.layers.StringLookup(vocabulary=["red", "green", "blue"]),
                keras.layers.Embedding(5, 4),
                keras.layers.Flatten(),
                keras.layers.Dense(CLASSES),
            ]
        )

    ours, theirs, _ = twins(build, classifier_compile())
    if source == "dataset":
        fit_both(ours, theirs, dataset, epochs=2)
        evaluate_both(ours, theirs, dataset, return_dict=True)
        predict_both(ours, theirs, dataset.map(lambda x, y: x))
    else:
        fit_both(ours, theirs, words, labels(), batch_size=16, epochs=2)
        evaluate_both(ours, theirs, words, labels(), batch_size=16, return_dict=True)
        predict_both(ours, theirs, words, batch_size=16)
