"""Conformance: more of the layer families padding rows would change, as Keras gives them.

Completes `test_padding_cases.py` (same harness: 103 rows at batch 32, a
partial last batch of 7, `fit` / `evaluate` / `predict` compared with plain
Keras from the same seed): `sample_weight` of every rank Keras accepts for
per-row, per-timestep and per-pixel losses, and BatchNormalization,
`add_loss` and activity regularizers combined with validation, weights and
nesting. On several replicas, as described in `test_padding_cases.py`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import FEATURES, replicas
from like_keras import fit_both
from test_padding_cases import (
    ROWS,
    BatchPenalty,
    assert_like_keras,
    classes,
    features,
    mlp,
    segmenter,
    sparse_ce,
    twins,
)

import tpufit
from tpufit.config import Layout


def uniform(*shape) -> np.ndarray:
    return np.random.default_rng(7).uniform(0.1, 2.0, size=(ROWS, *shape)).astype("float32")


def regressor_compile():
    return dict(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])


def sequence_model() -> keras.Model:
    # Dense layers on a (5, 3) sequence: one loss per row and timestep, no RNN to trace.
    return keras.Sequential(
        [keras.Input((5, 3)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(3)]
    )


def masked_sequence_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(10, 4, mask_zero=True),
            keras.layers.GRU(4, return_sequences=True),
            keras.layers.Dense(3),
        ]
    )


def masked_tokens() -> np.ndarray:
    tokens = classes(shape=(6,), count=10)
    tokens[:, 4:] = 0
    tokens[::3, 2:] = 0  # Sequences of two lengths.
    return tokens


# Each case: the model, its compile arguments, x, y, the sample weights, the layout tpufit picks.
RANKS = {
    "rows": lambda: (mlp(), sparse_ce(metrics=["accuracy"]), features(), classes(), uniform()),
    "rows_column": lambda: (
        mlp(),
        sparse_ce(weighted_metrics=["accuracy"]),
        features(),
        classes(),
        uniform(1),
    ),
    "regression_rows": lambda: (
        mlp(outputs=1),
        regressor_compile,
        features(),
        features()[:, :1] * 2.0,
        uniform(),
    ),
    "sequence_rows_column": lambda: (
        sequence_model,
        regressor_compile,
        features(shape=(5, 3)),
        features(shape=(5, 3)) ** 2,
        uniform(1),
    ),
    "sequence_steps": lambda: (
        sequence_model,
        regressor_compile,
        features(shape=(5, 3)),
        features(shape=(5, 3)) ** 2,
        uniform(5),
    ),
    "sequence_steps_column": lambda: (
        sequence_model,
        regressor_compile,
        features(shape=(5, 3)),
        features(shape=(5, 3)) ** 2,
        uniform(5, 1),
    ),
    "pixels_column": lambda: (
        segmenter,
        sparse_ce(metrics=["accuracy"]),
        features(shape=(8, 8, 2)),
        classes(shape=(8, 8)),
        uniform(8, 8, 1),
    ),
    "masked_rows_column": lambda: (
        masked_sequence_model,
        sparse_ce(jit_compile=False),
        masked_tokens(),
        classes(shape=(6,)),
        uniform(1),
    ),
    "masked_steps": lambda: (
        masked_sequence_model,
        sparse_ce(jit_compile=False, weighted_metrics=["accuracy"]),
        masked_tokens(),
        classes(shape=(6,)),
        uniform(6),
    ),
}


ROW_WISE = ("rows", "rows_column", "regression_rows")


@pytest.mark.parametrize("case", RANKS)
def test_sample_weight_of_every_rank_keras_accepts_weighs_as_in_keras(case):
    build, compile_kwargs, x, y, sample_weight = RANKS[case]()
    layout = Layout.PADDED if case in ROW_WISE else Layout.TRUE_SIZE
    assert_like_keras(build, compile_kwargs, x, y, sample_weight, layout=layout, epochs=1)


def test_a_padded_masked_sequence_loses_over_the_real_rows_timesteps_as_keras():
    # With partial_batch="pad", Keras's masked mean counts the padding rows' timesteps too:
    # tpufit divides by the real rows' (of every replica) instead. The partial batch's last
    # rows are shorter than the rows padding copies, so the two counts differ.
    tokens = masked_tokens()
    tokens[97:, 1:] = 0
    assert_like_keras(
        masked_sequence_model,
        sparse_ce(jit_compile=False, weighted_metrics=["accuracy"]),
        tokens,
        classes(shape=(6,)),
        uniform(6),
        layout=Layout.PADDED,
        epochs=1,
        config=tpufit.RunConfig(partial_batch="pad", jit_compile=False),
    )


@pytest.mark.parametrize("case", ["sequence_rows_column", "masked_rows_column"])
def test_per_row_weights_of_rank_one_for_per_timestep_losses_fail_as_in_keras(case):
    # Keras multiplies (rows, timesteps) losses by (rows,) weights and fails; (rows, 1) works.
    # tpufit refuses them too, before any device work, in its own words.
    build, compile_kwargs, x, y, sample_weight = RANKS[case]()
    ours, theirs, _ = twins(build, compile_kwargs)
    with pytest.raises(Exception, match="[Ii]ncompatible shapes"):  # noqa: B017, PT011
        theirs.fit(x, y, sample_weight=sample_weight[:, 0], batch_size=32, verbose=0)
    before = ours.get_weights()
    with pytest.raises(tpufit.InvalidArgumentError, match="sample_weight"):
        ours.fit(x, y, sample_weight=sample_weight[:, 0], batch_size=32, verbose=0)
    for left, right in zip(ours.get_weights(), before, strict=True):
        np.testing.assert_array_equal(left, right)


def test_batch_normalization_with_weights_and_validation_trains_as_keras():
    build = mlp(keras.layers.BatchNormalization(momentum=0.7))
    ours, theirs, tm = twins(
        build, sparse_ce(weighted_metrics=["accuracy"]), keras_per_replica=True
    )
    # On replicas, a partial batch that splits evenly: see `test_padding_cases.assert_like_keras`.
    rows = ROWS - ROWS % 32 % replicas()
    x, y, weights = features(rows), classes(rows), uniform()[:rows]
    validation = (x[:45], y[:45], weights[:45])
    fit_both(
        ours, theirs, x, y, sample_weight=weights, batch_size=32, epochs=2,
        validation_data=validation,
    )  # fmt: skip
    assert tm.layouts["train"].layout is Layout.TRUE_SIZE
    assert tm.layouts["eval"].layout is Layout.PADDED


def test_batch_normalization_inside_a_nested_model_trains_as_keras():
    def build():
        inner = keras.Sequential(
            [keras.Input((8,)), keras.layers.BatchNormalization(momentum=0.5)], name="inner"
        )
        inputs = keras.Input((FEATURES,))
        hidden = inner(keras.layers.Dense(8, activation="relu")(inputs))
        return keras.Model(inputs, keras.layers.Dense(3)(hidden))

    tm = assert_like_keras(build, sparse_ce(), features(), classes(), keras_per_replica=True)
    assert "BatchNormalization" in tm.layouts["train"].reason


def test_add_loss_and_an_activity_regularizer_also_count_in_validation_as_keras():
    build = mlp(
        BatchPenalty(), keras.layers.Dense(8, activity_regularizer=keras.regularizers.L1(0.01))
    )
    ours, theirs, _ = twins(build, sparse_ce(metrics=["accuracy"]))
    validation = (features(45), classes(45))
    fit_both(
        ours, theirs, features(), classes(), batch_size=32, epochs=2, validation_data=validation
    )
