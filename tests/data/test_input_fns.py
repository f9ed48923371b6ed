"""`input_fn(ctx)`, TPUEstimator's way of giving data, exact against plain Keras.

Each test runs here on one replica and again in a child process with four
replicas under `MirroredStrategy`, where the `TPUContext` splits the batch.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    CLASSES,
    compile_args,
    keras_twin,
    make_strategy,
    own_step_model,
    replicas,
    run_pytest_with_replicas,
    tiny_data,
    tiny_model,
)

import tpufit

ROWS, BATCH = 100, 16


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(replicas() > 1, reason="this is the child process")
def test_input_fn_over_four_replicas_in_a_child_process():
    summary = run_pytest_with_replicas("data/test_input_fns.py", 4)
    # Only this test skips itself there: every input_fn test ran on four replicas.
    assert " 1 skipped" in summary and " failed" not in summary, summary


def compiled(model=None, config=None):
    strategy = make_strategy()
    if model is None:
        with strategy.scope():
            model = tiny_model()
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=3, config=config)
    tm.compile(**compile_args())
    return tm


class RecordingInputFn:
    """An input_fn over the given arrays that records every context it receives."""

    def __init__(self, *arrays):
        self.arrays = arrays
        self.contexts: list[tpufit.TPUContext] = []

    def __call__(self, ctx: tpufit.TPUContext) -> tf.data.Dataset:
        self.contexts.append(ctx)
        dataset = tf.data.Dataset.from_tensor_slices(self.arrays)
        return ctx.shard(dataset).batch(ctx.per_replica_batch_size)


def test_input_fn_gets_a_tpu_context_per_pipeline_and_trains_like_keras_step_for_step():
    x, y = tiny_data(ROWS)
    tm = compiled()
    twin = keras_twin(tm.model)
    input_fn = RecordingInputFn(x, y)
    history = tm.fit(input_fn, batch_size=BATCH, epochs=2, verbose=0)
    theirs = twin.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert tm.global_step == 14
    for mine, keras_weight in zip(tm.model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(mine, keras_weight, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(history.history["loss"], theirs.history["loss"], rtol=1e-4)
    # Once on the host to check it, once per input pipeline (one on one machine).
    assert len(input_fn.contexts) == 2
    for ctx in input_fn.contexts:
        assert ctx == tpufit.TPUContext(
            mode="train",
            num_replicas=replicas(),
            global_batch_size=BATCH,
            per_replica_batch_size=BATCH // replicas(),
            input_pipeline_id=0,
            num_input_pipelines=1,
        )


def test_input_fn_at_true_size_trains_and_evaluates_like_keras_on_one_device():
    # Each replica's pipeline counts only its own rows: the step's are summed over replicas.
    x, y = tiny_data(ROWS)
    tm = compiled(config=tpufit.RunConfig(partial_batch="true_size"))
    twin = keras_twin(tm.model)
    history = tm.fit(RecordingInputFn(x, y), batch_size=BATCH, epochs=2, verbose=0)
    theirs = twin.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"], theirs.history["loss"], rtol=1e-4)
    for mine, keras_weight in zip(tm.model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(mine, keras_weight, rtol=1e-4, atol=1e-5)
    ours = tm.evaluate(RecordingInputFn(x, y), batch_size=BATCH, return_dict=True, verbose=0)
    keras_logs = twin.evaluate(x, y, batch_size=BATCH, return_dict=True, verbose=0)
    for name, value in keras_logs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, err_msg=name)


def test_input_fn_evaluates_and_predicts_exactly_and_in_order():
    x, y = tiny_data(ROWS)
    tm = compiled()
    twin = keras_twin(tm.model)
    evaluate_fn, predict_fn = RecordingInputFn(x, y), RecordingInputFn(x)
    ours = tm.evaluate(evaluate_fn, batch_size=BATCH, return_dict=True, verbose=0)
    theirs = twin.evaluate(x, y, batch_size=ROWS, return_dict=True, verbose=0)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, err_msg=name)
    predictions = tm.predict(input_fn=predict_fn, batch_size=BATCH, verbose=0)
    assert predictions.shape == (ROWS, CLASSES)
    np.testing.assert_allclose(predictions, twin(x), atol=1e-5)
    assert {c.mode for c in evaluate_fn.contexts} == {"eval"}
    assert {c.mode for c in predict_fn.contexts} == {"predict"}
    assert tm.traces == {"eval": 1, "predict": 1}


def test_tpuestimator_params_input_fn_and_class_weight():
    x, y = tiny_data(64)
    seen = []

    def input_fn(params):
        seen.append(params)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"])

    tm = compiled()
    twin = keras_twin(tm.model)
    tm.fit(input_fn=input_fn, batch_size=BATCH, class_weight={0: 2.0}, epochs=1, verbose=0)
    twin.fit(x, y, batch_size=BATCH, class_weight={0: 2.0}, shuffle=False, verbose=0)
    assert seen[0]["batch_size"] == BATCH // replicas()
    assert isinstance(seen[0]["context"], tpufit.TPUContext)
    for mine, keras_weight in zip(tm.model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(mine, keras_weight, rtol=1e-4, atol=1e-5)


def fit_on_an_endless_input_fn(**budget) -> tpufit.TPUModel:
    """Fits the tiny model on an `input_fn` that repeats its data forever, within `budget`."""
    x, y = tiny_data(64)
    tm = compiled()
    tm.fit(
        lambda ctx: (
            tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(ctx.per_replica_batch_size)
        ),
        batch_size=BATCH,
        verbose=0,
        **budget,
    )
    return tm


def test_input_fn_with_steps_per_epoch_over_an_endless_dataset():
    tm = fit_on_an_endless_input_fn(steps_per_epoch=5, epochs=2)
    assert tm.global_step == 10


def test_input_fn_over_an_endless_dataset_trains_to_max_steps():
    tm = fit_on_an_endless_input_fn(max_steps=7)
    assert tm.global_step == 7


@pytest.mark.parametrize(
    "call, error, words",
    [
        (
            lambda tm, x, y: tm.fit(lambda ctx: [x, y], verbose=0),
            tpufit.InvalidTypeError,
            ["input_fn", "tf.data.Dataset", "list"],
        ),
        (
            lambda tm, x, y: tm.predict(
                lambda ctx: tf.data.Dataset.from_tensor_slices(x).batch(4).repeat(), verbose=0
            ),
            tpufit.InvalidArgumentError,
            ["steps", "endless"],
        ),
        (
            lambda tm, x, y: tm.predict(x, input_fn=lambda ctx: None, verbose=0),
            tpufit.InvalidArgumentError,
            ["either x or input_fn"],
        ),
        (
            lambda tm, x, y: tm.evaluate(
                lambda ctx: tf.data.Dataset.from_tensor_slices((x, y)), verbose=0
            ),
            tpufit.InvalidArgumentError,
            ["unbatched"],
        ),
    ],
)
def test_bad_input_fn_fails_before_any_device_work(call, error, words):
    x, y = tiny_data(20)
    tm = compiled()
    before = [w.copy() for w in tm.model.get_weights()]
    with pytest.raises(error) as raised:
        call(tm, x, y)
    for word in words:
        assert word in str(raised.value)
    assert tm.traces == {}
    for a, b in zip(before, tm.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_own_train_step_gets_the_input_fn_batches_as_they_are():
    strategy = make_strategy()
    with strategy.scope():
        model = own_step_model()
    x, _ = tiny_data(64)
    y = x.sum(axis=1, keepdims=True)
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=2)
    tm.compile(optimizer=keras.optimizers.SGD(0.01))
    tm.fit(
        lambda ctx: tf.data.Dataset.from_tensor_slices((x, y)).batch(ctx.per_replica_batch_size),
        batch_size=BATCH,
        epochs=1,
        verbose=0,
    )
    assert tm.global_step == 4
    # Traced once with the input_fn's own (unknown) batch dimension, never padded.
    assert {s[:2] for s in model.seen} == {("tuple", 2)}
    assert {s[2] for s in model.seen} <= {BATCH // replicas(), -1, 1}
