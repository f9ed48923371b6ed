"""`choose_layout`: padded only where padding rows are provably invisible, and why."""

from __future__ import annotations

import keras
import pytest
from conftest import FEATURES, RowCounter, own_step_model

import tpufit
from tpufit import errors
from tpufit.config import Layout, Mode
from tpufit.device.layout import LayoutChoice, choose_layout


def mlp(*middle: keras.layers.Layer, inputs=(FEATURES,), outputs: int = 3) -> keras.Model:
    return keras.Sequential(
        [keras.Input(inputs), *middle, keras.layers.Dense(8), keras.layers.Dense(outputs)]
    )


def compiled(model: keras.Model, loss="sparse_categorical_crossentropy", **kwargs) -> keras.Model:
    model.compile(optimizer="sgd", loss=loss, **kwargs)
    return model


def choices(model: keras.Model, setting: str = "auto") -> dict[Mode, LayoutChoice]:
    return {mode: choose_layout(model, mode, setting) for mode in Mode}


def test_a_row_wise_mlp_pads_in_every_mode():
    found = choices(compiled(mlp(), metrics=["accuracy", keras.metrics.AUC()]))
    assert {choice.layout for choice in found.values()} == {Layout.PADDED}
    assert found[Mode.TRAIN].reason == (
        "every layer is row-wise and the loss and metrics weight rows"
    )
    assert "prediction rows are independent" in found[Mode.PREDICT].reason


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        (keras.layers.BatchNormalization(name="bn"), "layer 'bn' (BatchNormalization) mixes rows"),
        (keras.layers.Dropout(0.5, name="drop"), "layer 'drop' (Dropout) draws random numbers"),
        (keras.layers.GaussianNoise(0.1), "(GaussianNoise) draws random numbers"),
        (keras.layers.AlphaDropout(0.1), "(AlphaDropout) draws random numbers"),
    ],
)
def test_batch_statistics_and_random_layers_run_at_true_size_in_training_only(layer, words):
    found = choices(compiled(mlp(layer)))
    assert found[Mode.TRAIN].layout is Layout.TRUE_SIZE
    assert words in found[Mode.TRAIN].reason
    assert found[Mode.EVAL].layout is Layout.PADDED
    assert found[Mode.PREDICT].layout is Layout.PADDED


def test_random_preprocessing_and_rnn_dropout_draw_random_numbers_in_training():
    images = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.RandomFlip(),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    sequences = keras.Sequential(
        [
            keras.Input((5, 2)),
            keras.layers.Bidirectional(keras.layers.GRU(3, recurrent_dropout=0.2)),
            keras.layers.Dense(3),
        ]
    )
    for model, words in ((images, "RandomFlip"), (sequences, "draws dropout masks")):
        found = choices(compiled(model))
        assert words in found[Mode.TRAIN].reason
        assert found[Mode.EVAL].layout is Layout.PADDED


def test_rnn_layers_without_dropout_or_masks_are_row_wise():
    inputs = keras.Input((5, 2))
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True))(inputs)
    hidden = keras.layers.SimpleRNN(3, return_sequences=True)(hidden)
    hidden = keras.layers.RNN(keras.layers.GRUCell(3))(hidden)
    model = compiled(keras.Model(inputs, keras.layers.Dense(3)(hidden)))
    assert choose_layout(model, Mode.TRAIN).layout is Layout.PADDED


def test_a_layer_nested_in_an_inner_model_is_found():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.BatchNormalization(name="inner_bn")], name="block"
    )
    inputs = keras.Input((FEATURES,))
    outputs = keras.layers.Dense(3)(inner(keras.layers.Dense(8)(inputs)))
    choice = choose_layout(compiled(keras.Model(inputs, outputs)), Mode.TRAIN)
    assert choice.layout is Layout.TRUE_SIZE and "'inner_bn'" in choice.reason


class Centered(keras.layers.Layer):
    """Subtracts the batch mean: a user layer that mixes rows."""

    def call(self, x):
        return x - keras.ops.mean(x, axis=0)


class Scaled(keras.layers.Dense):
    """A Dense whose own `call` tpufit cannot see into."""

    def call(self, x):
        return super().call(x) * 2.0


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        (Centered(name="c"), "layer 'c' (Centered) has its own call"),
        (Scaled(8, name="s"), "layer 's' (Scaled) has its own call"),
        (keras.layers.Lambda(lambda x: x * 2, name="l"), "layer 'l' (Lambda) is not a Keras layer"),
        (keras.layers.Dense(8, activity_regularizer="l2", name="d"), "'d' (Dense) has an activity"),
    ],
)
def test_layers_not_provably_row_wise_run_at_true_size_in_train_and_eval(layer, words):
    found = choices(compiled(mlp(layer)))
    for mode in (Mode.TRAIN, Mode.EVAL):
        assert found[mode].layout is Layout.TRUE_SIZE
        assert words in found[mode].reason
    assert found[Mode.PREDICT].layout is Layout.PADDED


def test_kernel_regularizers_do_not_depend_on_the_batch():
    model = compiled(mlp(keras.layers.Dense(8, kernel_regularizer="l2", bias_regularizer="l1")))
    assert choose_layout(model, Mode.TRAIN).layout is Layout.PADDED


@pytest.mark.parametrize(
    "masking",
    [
        keras.layers.Embedding(10, 4, mask_zero=True, name="e"),
        keras.layers.Masking(name="m"),
    ],
)
def test_a_mask_reaching_the_loss_runs_at_true_size(masking):
    dtype = "int32" if isinstance(masking, keras.layers.Embedding) else "float32"
    shape = (6,) if dtype == "int32" else (6, 4)
    model = keras.Sequential(
        [keras.Input(shape, dtype=dtype), masking, keras.layers.GRU(3), keras.layers.Dense(3)]
    )
    choice = choose_layout(compiled(model), Mode.EVAL)
    assert choice.layout is Layout.TRUE_SIZE
    assert f"layer '{masking.name}'" in choice.reason and "mask" in choice.reason


def test_an_embedding_without_a_mask_is_row_wise():
    model = keras.Sequential(
        [keras.Input((6,), dtype="int32"), keras.layers.Embedding(10, 4), keras.layers.Flatten()]
    )
    model.add(keras.layers.Dense(3))
    assert choose_layout(compiled(model), Mode.TRAIN).layout is Layout.PADDED


def my_loss(y_true, y_pred):
    return keras.ops.mean(keras.ops.square(y_true - y_pred))


class MyLoss(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return keras.ops.square(y_true - y_pred)


@pytest.mark.parametrize(
    ("loss", "words"),
    [(my_loss, "loss 'my_loss' is not a Keras built-in"), (MyLoss(name="mine"), "loss 'mine'")],
)
def test_a_user_loss_runs_at_true_size(loss, words):
    choice = choose_layout(compiled(mlp(), loss=loss), Mode.TRAIN)
    assert choice.layout is Layout.TRUE_SIZE and words in choice.reason


@pytest.mark.parametrize(
    "loss", ["mse", keras.losses.mean_squared_error, keras.losses.MeanSquaredError()]
)
def test_keras_losses_given_any_way_weight_rows(loss):
    assert choose_layout(compiled(mlp(), loss=loss), Mode.TRAIN).layout is Layout.PADDED


def test_a_sum_loss_cannot_be_masked_even_when_padding_is_asked_for():
    model = compiled(mlp(), loss=keras.losses.MeanSquaredError(reduction="sum"))
    choice = choose_layout(model, Mode.TRAIN, "pad")
    assert choice.layout is Layout.TRUE_SIZE and "'sum'" in choice.reason


@pytest.mark.parametrize(
    ("model", "rank"),
    [
        (keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1)]), 4),
        (keras.Sequential([keras.Input((5, 2)), keras.layers.Dense(3)]), 3),
        (keras.Sequential([keras.Input((4,)), keras.layers.Dense(1), keras.layers.Reshape(())]), 1),
    ],
)
def test_outputs_that_are_not_one_loss_value_per_row_run_at_true_size(model, rank):
    choice = choose_layout(compiled(model, loss="mse"), Mode.EVAL)
    assert choice.layout is Layout.TRUE_SIZE and f"has rank {rank}" in choice.reason


def test_an_unbuilt_model_runs_at_true_size_as_its_outputs_are_unknown():
    model = compiled(keras.Sequential([keras.layers.Dense(3)]))
    choice = choose_layout(model, Mode.TRAIN)
    assert choice.layout is Layout.TRUE_SIZE and "not known" in choice.reason


def spread(y_true, y_pred):
    return keras.ops.std(y_pred)


@pytest.mark.parametrize(
    ("given", "name"),
    [
        (dict(metrics=[RowCounter()]), "row_counter"),
        (dict(metrics=["accuracy", spread]), "spread"),
        (dict(weighted_metrics=[keras.metrics.MeanMetricWrapper(spread, name="w")]), "w"),
        (
            dict(
                metrics=[keras.metrics.MeanMetricWrapper(keras.losses.mean_squared_error, name="k")]
            ),
            "k",
        ),
    ],
)
def test_metrics_keras_cannot_vouch_for_run_at_true_size(given, name):
    choice = choose_layout(compiled(mlp(), **given), Mode.EVAL)
    assert choice.layout is Layout.TRUE_SIZE
    assert choice.reason == f"metric '{name}' is not a Keras built-in that weights rows"


def test_keras_metrics_by_name_function_or_object_weight_rows():
    inputs = keras.Input((FEATURES,))
    model = keras.Model(
        inputs, {"a": keras.layers.Dense(3)(inputs), "b": keras.layers.Dense(1)(inputs)}
    )
    model.compile(
        optimizer="sgd",
        loss={"a": "sparse_categorical_crossentropy", "b": "mse"},
        metrics={"a": ["acc", keras.metrics.sparse_categorical_accuracy], "b": ["mae"]},
        weighted_metrics={"b": [keras.metrics.RootMeanSquaredError()]},
    )
    assert choose_layout(model, Mode.EVAL).layout is Layout.PADDED


def test_a_model_with_its_own_steps_runs_at_true_size_whatever_the_setting():
    model = own_step_model()
    model.compile(optimizer="sgd", loss="mse")
    for setting in ("auto", "pad", "true_size"):
        choice = choose_layout(model, Mode.TRAIN, setting)
        assert choice == LayoutChoice(
            Layout.TRUE_SIZE, "the model has its own train_step/test_step"
        )


def test_partial_batch_forces_the_layout_of_training_and_evaluation_only():
    batch_norm = compiled(mlp(keras.layers.BatchNormalization()))
    padded = choices(batch_norm, "pad")
    assert {choice.layout for choice in padded.values()} == {Layout.PADDED}
    assert "partial_batch='pad'" in padded[Mode.TRAIN].reason
    true_size = choices(compiled(mlp()), "true_size")
    assert true_size[Mode.TRAIN].layout is true_size[Mode.EVAL].layout is Layout.TRUE_SIZE
    assert "partial_batch='true_size'" in true_size[Mode.EVAL].reason
    assert true_size[Mode.PREDICT].layout is Layout.PADDED


def test_partial_batch_is_checked_when_the_config_is_made():
    assert tpufit.RunConfig(partial_batch="pad").partial_batch == "pad"
    with pytest.raises(errors.InvalidArgumentError, match="partial_batch"):
        tpufit.RunConfig(partial_batch="drop")


def test_a_tpu_model_shows_each_mode_s_choice():
    tm = tpufit.TPUModel(mlp(keras.layers.BatchNormalization(name="bn")), iterations_per_loop=2)
    tm.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert tm.layouts == {}
    x = keras.random.normal((10, FEATURES), seed=1).numpy()
    tm.fit(x, (x[:, 0] > 0).astype("int32"), batch_size=4, verbose=0)
    tm.predict(x, batch_size=4, verbose=0)
    assert tm.layouts["train"].layout is Layout.TRUE_SIZE
    assert "'bn'" in tm.layouts["train"].reason
    assert tm.layouts["predict"].layout is Layout.PADDED
    assert tm.traces == {"train": 2, "predict": 1}  # Full batches, and the partial one.
