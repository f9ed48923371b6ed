"""Conformance: models that padding rows would change give Keras's results on a partial batch.

Each case is plain Keras code, run once through `tpufit.attach` and once in
plain Keras, both built after the same `keras.utils.set_random_seed` (so
their weights and their layers' random seeds match), on 103 rows at batch 32
(a partial last batch of 7), and compared: `fit`'s history and final weights
(BatchNormalization's moving statistics included), `evaluate`, `predict`.

On several replicas (`TPUFIT_TEST_REPLICAS=4`, run by `test_padding_on_replicas.py`)
ours is built and runs under a `MirroredStrategy` over them, and is compared with
plain Keras on one device. Two kinds of case differ there:

- Batch statistics (BatchNormalization), dropout draws and a metric of the whole
  batch are defined per replica by Keras itself: such a case (`keras_per_replica`)
  is compared with plain Keras under the same `MirroredStrategy`, on rows whose
  partial batch splits evenly over the replicas (Keras's steps weight each replica
  `1 / replicas`, tpufit's by rows: the two agree only on an even split).
- A case whose partial last batch runs at its true size (`TRUE_SIZE`) is split
  unevenly over the replicas; tpufit counts each replica's loss by its share of
  the rows (Keras under a `MirroredStrategy` gives each `1 / replicas`), so it
  matches one device; a masked output's loss counts by the replica's share of
  the unmasked timesteps, in `fit` and `evaluate` alike.
- BatchNormalization's moving statistics are a `MirroredVariable` whose copies each
  replica assigns from its own share of a batch (in Keras too): the copies drift
  apart, so `evaluate` / `predict` depend on which replica gets which rows. tpufit
  gives each replica the real rows a distributed dataset gives it
  (`padding.replica_order`), so they match Keras under the same strategy.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import like_keras
import numpy as np
import pytest
from conftest import FEATURES, RowCounter, replicas

import tpufit
from tpufit.config import Layout

ROWS = 103
BATCH = 32
RTOL = 1e-5
ATOL = 1e-6


def features(rows: int = ROWS, shape=(FEATURES,)) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(rows, *shape)).astype("float32")


def classes(rows: int = ROWS, shape=(), count: int = 3) -> np.ndarray:
    return np.random.default_rng(2).integers(0, count, size=(rows, *shape))


def mlp(*middle: keras.layers.Layer, outputs: int = 3) -> Callable[[], keras.Model]:
    """A builder of `features -> Dense(8) -> middle -> Dense(outputs)`, fresh layers each time."""

    def build() -> keras.Model:
        layers = [type(layer).from_config(layer.get_config()) for layer in middle]
        return keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Dense(8, activation="relu"),
                *layers,
                keras.layers.Dense(outputs),
            ]
        )

    return build


def sparse_ce(**extra) -> Callable[[], dict]:
    def compile_kwargs() -> dict:
        return dict(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **extra,
        )

    return compile_kwargs


def twins(
    build: Callable[[], keras.Model],
    compile_kwargs: Callable[[], dict],
    *,
    keras_per_replica: bool = False,
    **tpu_kwargs,
):
    """`(ours, theirs, tm)`: the same model built twice from one seed, ours attached.

    In a process with several logical CPUs, ours is built and runs on all of them
    (and so does plain Keras's twin with `keras_per_replica`). Both are compiled
    before `attach`, so ours takes Keras's compile arguments.
    """
    strategy = like_keras.strategy()
    keras.utils.set_random_seed(0)
    if strategy is None:
        ours = build()
    else:
        with strategy.scope():
            ours = build()
    keras.utils.set_random_seed(0)
    if strategy is not None and keras_per_replica:
        with strategy.scope():
            theirs = build()
    else:
        theirs = build()
    ours.compile(**compile_kwargs())
    theirs.compile(**compile_kwargs())
    tm = tpufit.attach(ours, strategy=strategy, iterations_per_loop=4, **tpu_kwargs)
    return ours, theirs, tm


def assert_evaluates_like_keras(ours, theirs, x, y, sample_weight) -> None:
    evaluate = dict(batch_size=BATCH, verbose=0, return_dict=True)
    scores = ours.evaluate(x, y, sample_weight=sample_weight, **evaluate)
    keras_scores = theirs.evaluate(x, y, sample_weight=sample_weight, **evaluate)
    assert sorted(scores) == sorted(keras_scores)
    for name, value in keras_scores.items():
        np.testing.assert_allclose(scores[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def assert_like_keras(
    build,
    compile_kwargs,
    x,
    y,
    sample_weight=None,
    *,
    layout=Layout.TRUE_SIZE,
    epochs=2,
    keras_per_replica=False,
    **tpu_kwargs,
):
    """Runs fit / evaluate / predict through tpufit and in Keras and compares everything.

    On replicas, a `keras_per_replica` case runs on rows whose partial batch splits
    evenly (see the module docstring).
    """
    ours, theirs, tm = twins(
        build, compile_kwargs, keras_per_replica=keras_per_replica, **tpu_kwargs
    )
    if keras_per_replica and replicas() > 1:
        # Keras under the strategy gives each replica's loss 1 / replicas of a step, tpufit
        # its share of the rows: they agree when the partial batch splits evenly.
        rows = ROWS - ROWS % BATCH % replicas()
        x, y = x[:rows], y[:rows]
        sample_weight = None if sample_weight is None else sample_weight[:rows]
    kwargs = dict(batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    mine = ours.fit(x, y, sample_weight=sample_weight, **kwargs)
    keras_history = theirs.fit(x, y, sample_weight=sample_weight, **kwargs)
    assert tm.layouts["train"].layout is layout, tm.layouts["train"]
    assert sorted(mine.history) == sorted(keras_history.history)
    for name, values in keras_history.history.items():
        np.testing.assert_allclose(mine.history[name], values, rtol=RTOL, atol=ATOL, err_msg=name)
    # `weights` holds the non-trainable ones too: BatchNormalization's moving statistics.
    for left, right in zip(ours.weights, theirs.weights, strict=True):
        np.testing.assert_allclose(left.numpy(), right.numpy(), rtol=RTOL, atol=ATOL)
    assert_evaluates_like_keras(ours, theirs, x, y, sample_weight)
    np.testing.assert_allclose(
        ours.predict(x, batch_size=BATCH, verbose=0),
        theirs.predict(x, batch_size=BATCH, verbose=0),
        rtol=RTOL,
        atol=ATOL,
    )
    return tm


def test_batch_normalization_trains_as_keras_with_its_moving_statistics():
    tm = assert_like_keras(
        mlp(keras.layers.BatchNormalization(momentum=0.5)),
        sparse_ce(),
        features(),
        classes(),
        keras_per_replica=True,
    )
    assert "BatchNormalization" in tm.layouts["train"].reason
    assert tm.layouts["eval"].layout is Layout.PADDED  # Moving statistics in inference.


def test_dropout_draws_the_masks_keras_draws():
    # At Keras's own XLA setting (none on a CPU): XLA draws other random numbers.
    assert_like_keras(
        mlp(keras.layers.Dropout(0.5)),
        sparse_ce(),
        features(),
        classes(),
        keras_per_replica=True,
        config=tpufit.RunConfig(jit_compile=False),
    )


def test_a_kernel_regularizer_counts_once_whatever_the_replicas():
    build = mlp(keras.layers.Dense(8, kernel_regularizer=keras.regularizers.L2(0.5)))
    tm = assert_like_keras(build, sparse_ce(), features(), classes(), layout=Layout.PADDED)
    assert tm.layouts["eval"].layout is Layout.PADDED


def test_an_activity_regularizer_adds_keras_batch_loss():
    build = mlp(keras.layers.Dense(8, activity_regularizer=keras.regularizers.L2(0.1)))
    assert_like_keras(build, sparse_ce(), features(), classes())


class BatchPenalty(keras.layers.Layer):
    """Adds a loss that depends on the whole batch (its mean activation)."""

    def call(self, x):
        self.add_loss(0.5 * keras.ops.mean(keras.ops.square(x)))
        return x


def test_a_layer_calling_add_loss_trains_as_keras():
    assert_like_keras(mlp(BatchPenalty()), sparse_ce(), features(), classes())


def test_a_model_compiled_without_a_loss_trains_on_its_add_loss():
    def compile_kwargs():
        return dict(optimizer=keras.optimizers.SGD(0.1), loss=None)

    assert_like_keras(mlp(BatchPenalty()), compile_kwargs, features(), classes())


class MaxLogit(keras.metrics.Metric):
    """The largest logit seen; its `update_state` has no `sample_weight` parameter."""

    def __init__(self, name="max_logit", **kwargs):
        super().__init__(name=name, **kwargs)
        self.top = self.add_variable((), initializer="zeros", name="top")

    def update_state(self, y_true, y_pred):
        self.top.assign(keras.ops.maximum(self.top, keras.ops.max(y_pred)))

    def result(self):
        return self.top


def batch_spread(y_true, y_pred):
    """One number per batch: the spread of the logits over the batch."""
    return keras.ops.std(y_pred)


@pytest.mark.parametrize(
    ("metric", "per_batch"),
    [
        pytest.param(RowCounter, False, id="ignores"),
        pytest.param(lambda: batch_spread, True, id="scalar"),  # One number per replica's batch.
    ],
)
def test_a_custom_metric_sees_the_rows_keras_gives_it(metric, per_batch):
    tm = assert_like_keras(
        mlp(),
        lambda: sparse_ce(metrics=[metric()])(),
        features(),
        classes(),
        epochs=1,
        keras_per_replica=per_batch,
    )
    assert "metric" in tm.layouts["eval"].reason


def test_a_metric_without_a_sample_weight_parameter_fails_as_in_keras():
    # Keras's compiled metrics always pass `sample_weight=`: such a metric fails in Keras too.
    ours, theirs, _ = twins(mlp(), lambda: sparse_ce(metrics=[MaxLogit()])())
    for model in (theirs, ours):
        with pytest.raises(TypeError, match="sample_weight"):
            model.fit(features(), classes(), batch_size=BATCH, verbose=0)


def segmenter() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(3, 1),
        ]
    )


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param(None),
        "rows",
        pytest.param("pixels"),
    ],
)
def test_segmentation_losses_per_pixel_as_keras(weights):
    x, y = features(shape=(8, 8, 2)), classes(shape=(8, 8))
    rng = np.random.default_rng(3)
    sample_weight = {
        None: None,
        "rows": rng.uniform(size=ROWS).astype("float32"),
        "pixels": rng.uniform(size=(ROWS, 8, 8)).astype("float32"),
    }[weights]
    compile_kwargs = sparse_ce(metrics=["accuracy"])
    if weights == "rows":
        # Keras itself cannot weight (n, 8, 8) losses by (n,) weights: the same error, both ways.
        ours, theirs, _ = twins(segmenter, compile_kwargs)
        for model in (theirs, ours):
            with pytest.raises(Exception):  # noqa: B017, PT011 - Keras's own error.
                model.fit(x, y, sample_weight=sample_weight, batch_size=BATCH, verbose=0)
        return
    assert_like_keras(segmenter, compile_kwargs, x, y, sample_weight, epochs=1)


def test_sequence_outputs_lose_per_timestep_as_keras():
    def build():
        return keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.RepeatVector(5),
                keras.layers.SimpleRNN(4, return_sequences=True),
                keras.layers.Dense(3),
            ]
        )

    def compile_kwargs():
        # Without XLA: tpufit's "auto" would time XLA for an RNN, slowly; Keras does not use it.
        return dict(
            optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"], jit_compile=False
        )

    y = features(shape=(5, 3))
    assert_like_keras(build, compile_kwargs, features(shape=(3,)), y, epochs=1)


def test_a_masked_sequence_loses_only_on_its_real_timesteps_as_keras():
    def build():
        return keras.Sequential(
            [
                keras.Input((6,), dtype="int32"),
                keras.layers.Embedding(10, 4, mask_zero=True),
                keras.layers.GRU(4, return_sequences=True),
                keras.layers.Dense(3),
            ]
        )

    tokens = classes(shape=(6,), count=10)
    tokens[:, 4:] = 0  # Padded sequences: their tail is masked out of the loss.
    compile_kwargs = sparse_ce(jit_compile=False)
    # Token 0 also occurs early, so lengths differ, also between the replicas' rows.
    tm = assert_like_keras(build, compile_kwargs, tokens, classes(shape=(6,)), epochs=1)
    assert "mask" in tm.layouts["train"].reason


def test_a_row_wise_mlp_still_pads():
    tm = assert_like_keras(
        mlp(), sparse_ce(metrics=["accuracy"]), features(), classes(), layout=Layout.PADDED
    )
    assert set(tm.layouts) == {"train", "eval", "predict"}
    assert all(choice.layout is Layout.PADDED for choice in tm.layouts.values())


@pytest.mark.parametrize(
    ("setting", "build", "layout"),
    [
        ("pad", mlp(keras.layers.BatchNormalization()), Layout.PADDED),
        ("true_size", mlp(), Layout.TRUE_SIZE),
    ],
)
def test_partial_batch_forces_the_layout(setting, build, layout):
    ours, _, tm = twins(build, sparse_ce(), config=tpufit.RunConfig(partial_batch=setting))
    ours.fit(features(), classes(), batch_size=BATCH, shuffle=False, verbose=0)
    ours.evaluate(features(), classes(), batch_size=BATCH, verbose=0)
    assert tm.layouts["train"].layout is layout
    assert tm.layouts["eval"].layout is layout
    assert setting in tm.layouts["train"].reason
