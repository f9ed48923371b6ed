"""Several replicas: four logical CPU devices under a real `MirroredStrategy`.

The device split must happen before TensorFlow starts, so the outer test runs
this file again in a child pytest with `TPUFIT_TEST_REPLICAS=4`; the inner
tests run only there.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    CLASSES,
    FEATURES,
    TinyGAN,
    compile_args,
    copy_model,
    make_strategy,
    own_step_model,
    replicas,
    run_pytest_with_replicas,
    tiny_data,
    tiny_model,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpufit
from tpufit.config import Layout, Mode
from tpufit.data import infeed, resident, sharding
from tpufit.device import outfeed, programs

inside = pytest.mark.skipif(replicas() == 1, reason="runs in the 4-replica child process")
SIZES = dict(
    rows=st.integers(1, 200),
    num_replicas=st.integers(1, 4),
    per_replica=st.integers(1, 12),
    loop=st.integers(1, 4),
)
EXAMPLES = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(replicas() > 1, reason="this is the child process")
def test_four_replicas_in_a_child_process():
    summary = run_pytest_with_replicas("device/test_multi_replica.py", 4)
    assert summary.startswith("20 passed"), summary


def four_replica_model(built_inside_scope: bool, num_replicas: int = 4):
    strategy = make_strategy(num_replicas)
    if built_inside_scope:
        with strategy.scope():
            model = tiny_model()
    else:
        model = tiny_model()
    return model, tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=3)


@inside
def test_the_child_process_has_four_replicas():
    assert make_strategy().num_replicas_in_sync == 4


@inside
@EXAMPLES
@given(**SIZES)
def test_predict_is_exact_and_in_order_over_any_replica_count(
    rows, num_replicas, per_replica, loop
):
    model, tm = four_replica_model(built_inside_scope=True, num_replicas=num_replicas)
    x, _ = tiny_data(rows, seed=rows)
    tm = tpufit.TPUModel(model, strategy=tm.strategy, iterations_per_loop=loop)
    predictions = tm.predict(x, batch_size=num_replicas * per_replica, verbose=0)
    assert predictions.shape == (rows, CLASSES)
    np.testing.assert_allclose(predictions, model(x, training=False), atol=1e-5)


@inside
@EXAMPLES
@given(**SIZES)
def test_evaluate_over_any_replica_count_equals_keras_in_one_batch(
    rows, num_replicas, per_replica, loop
):
    model, tm = four_replica_model(built_inside_scope=True, num_replicas=num_replicas)
    tm = tpufit.TPUModel(model, strategy=tm.strategy, iterations_per_loop=loop)
    x, y = tiny_data(rows, seed=rows)
    tm.compile(**compile_args())
    ours = tm.evaluate(x, y, batch_size=num_replicas * per_replica, return_dict=True, verbose=0)
    reference = copy_model(model)
    reference.compile(**compile_args())
    theirs = reference.evaluate(x, y, batch_size=rows, return_dict=True, verbose=0)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, err_msg=name)


@inside
@pytest.mark.parametrize("kind", ["stream", "resident"])
def test_a_stopping_loop_runs_a_step_that_sums_over_the_replicas(kind):
    # No `cond` wraps an evaluation or prediction step: its collectives run, under the loop's
    # stop signal. Each row outfeeds the global batch's real rows, summed by the replicas.
    strategy = make_strategy()

    def step(data, signals):
        context = tf.distribute.get_replica_context()
        real = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(signals["mask"]))
        return tf.fill(tf.shape(data[0]), real), signals["mask"]

    program = programs.LoopProgram(
        strategy,
        step,
        outfeed.gather_predictions,
        stops=True,
        jit_compile=False,
        mode=Mode.PREDICT,
    )
    data = (np.arange(20, dtype="float32"),)
    feed = infeed.from_arrays(data, 8, mode=Mode.PREDICT, layout=Layout.PADDED)
    if kind == "resident":
        feed = resident.offer(
            feed, data, mode=Mode.PREDICT, layout=Layout.PADDED, seed=None, drop_remainder=False
        )
        iterator = feed.resident.iterator(strategy)
    else:
        iterator = iter(sharding.distribute(strategy, feed))
    result = program.run(iterator, 10)
    assert (result.steps, result.stopped) == (3, True)
    real, mask = outfeed.stack_rows(result.outfeed)
    assert sorted(real[mask > 0]) == [4.0] * 4 + [8.0] * 16


@inside
def test_training_over_four_replicas_matches_one_device_keras_step_for_step():
    x, y = tiny_data(100)
    model, tm = four_replica_model(built_inside_scope=False)
    reference = copy_model(model)
    tm.compile(**compile_args())
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(batch)
    )
    tm.fit(x, y, batch_size=32, epochs=2, shuffle=False, callbacks=[callback], verbose=0)
    assert seen == [2, 3] * 2  # loops of 3 steps, then the padded fourth
    assert tm.global_step == 8
    reference.compile(**compile_args())
    reference.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=False):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


@inside
@pytest.mark.parametrize("steps_per_epoch", [3, None])
def test_a_generator_read_ahead_trains_over_four_replicas_as_keras_on_one_device(steps_per_epoch):
    x, y = tiny_data(100)  # global batches of 32: 32, 32, 32 and 4 rows

    def batches():
        for start in range(0, 100, 32):
            yield x[start : start + 32], y[start : start + 32]

    model, tm = four_replica_model(built_inside_scope=True)
    reference = copy_model(model)
    tm.compile(**compile_args())
    reference.compile(**compile_args())
    fit_args = dict(epochs=2, steps_per_epoch=steps_per_epoch, verbose=0)
    tm.fit(batches(), **fit_args)
    reference.fit(x, y, batch_size=32, shuffle=False, **fit_args)
    assert tm.global_step == (3 + 1 if steps_per_epoch else 2 * 4)  # epochs end with the pass
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


@inside
def test_model_built_outside_the_scope_gets_the_trained_weights_back():
    x, y = tiny_data(64)
    model, tm = four_replica_model(built_inside_scope=False)
    before = [w.copy() for w in model.get_weights()]
    tm.compile(**compile_args())
    tm.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=False))
    np.testing.assert_allclose(
        model.predict(x, verbose=0), tm.predict(x, batch_size=16, verbose=0), atol=1e-5
    )


@inside
def test_batch_size_that_does_not_split_names_the_replicas_and_valid_sizes():
    x, y = tiny_data(64)
    _, tm = four_replica_model(built_inside_scope=True)
    tm.compile(**compile_args())
    with pytest.raises(tpufit.InvalidArgumentError) as raised:
        tm.fit(x, y, batch_size=10, verbose=0)
    message = str(raised.value)
    assert "4 replicas" in message and "8" in message and "12" in message
    assert tm.traces == {}


@inside
def test_loops_of_several_steps_do_not_retrace_over_four_replicas():
    x, y = tiny_data(150)
    _, tm = four_replica_model(built_inside_scope=True)
    tm.compile(**compile_args())
    tm.fit(x, y, batch_size=16, epochs=2, verbose=0)
    tm.evaluate(x[:37], y[:37], batch_size=16, verbose=0)
    tm.evaluate(x, y, batch_size=16, verbose=0)
    tm.predict(x[:9], batch_size=16, verbose=0)
    tm.predict(x, batch_size=16, verbose=0)
    assert tm.traces == {"train": 1, "eval": 1, "predict": 1}


@inside
def test_own_train_step_and_tf_data_work_over_four_replicas():
    strategy = make_strategy(4)
    with strategy.scope():
        model = own_step_model()
    x, _ = tiny_data(100)
    y = x.sum(axis=1, keepdims=True)
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=2)
    tm.compile(optimizer=keras.optimizers.SGD(0.01))
    tm.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert tm.global_step == 4  # three full batches, then the unpadded tail of 4 rows
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16)
    np.testing.assert_allclose(tm.predict(dataset, verbose=0), model(x), atol=1e-5)


@inside
def test_gan_with_two_optimizers_trains_over_four_replicas():
    # Its optimizers build their slots lazily: the first step runs eagerly, so
    # the slots exist before the loop is traced.
    strategy = make_strategy(4)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        gan = TinyGAN()
    tm = tpufit.TPUModel(gan, strategy=strategy, iterations_per_loop=5)
    tm.compile(
        d_optimizer=keras.optimizers.Adam(1e-3),
        g_optimizer=keras.optimizers.Adam(1e-3),
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True, reduction="sum"),
    )
    x, _ = tiny_data(320)
    history = tm.fit(tf.data.Dataset.from_tensor_slices(x).batch(32), epochs=2, verbose=0)
    assert gan.d_optimizer.iterations.numpy() == gan.g_optimizer.iterations.numpy() == 20
    assert tm.global_step == 20 and tm.traces == {"train": 1}
    assert np.isfinite(history.history["d_loss"]).all()


@inside
def test_callbacks_of_a_cloned_model_see_current_weights_and_can_restore_them():
    x, y = tiny_data(64)
    model, tm = four_replica_model(built_inside_scope=False)
    tm.compile(**compile_args())
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append([w.copy() for w in model.get_weights()])
    )
    initial = [w.copy() for w in model.get_weights()]
    restore = keras.callbacks.LambdaCallback(on_train_end=lambda logs: model.set_weights(initial))
    tm.fit(x, y, batch_size=16, epochs=2, callbacks=[record, restore], verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(initial, seen[0], strict=True))
    assert any(not np.allclose(a, b) for a, b in zip(seen[0], seen[1], strict=True))
    for restored, start in zip(model.get_weights(), initial, strict=True):
        np.testing.assert_array_equal(restored, start)
    np.testing.assert_allclose(tm.predict(x, batch_size=16, verbose=0), model(x), atol=1e-5)


@inside
def test_batch_callbacks_early_stopping_and_lr_changes_work_on_a_cloned_model():
    x, y = tiny_data(96)
    model, tm = four_replica_model(built_inside_scope=False)
    tm.compile(**compile_args())
    at_batch_end = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: at_batch_end.append(model.get_weights()[0].copy())
    )
    at_epoch_end = []
    epochs = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: at_epoch_end.append(model.get_weights())
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="loss", mode="max", patience=1, restore_best_weights=True
    )
    lower = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", patience=0, factor=0.5)
    tm.fit(x, y, batch_size=16, epochs=5, callbacks=[record, epochs, lower, stop], verbose=0)
    assert len(at_epoch_end) == 2 and len(at_batch_end) == 4  # loops of 3 and 3 steps
    assert not np.allclose(at_batch_end[0], at_batch_end[1])
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.05)
    for restored, best in zip(model.get_weights(), at_epoch_end[0], strict=True):
        np.testing.assert_array_equal(restored, best)
    np.testing.assert_allclose(tm.predict(x, batch_size=16, verbose=0), model(x), atol=1e-5)
    assert tm.traces["train"] == 1


@inside
@pytest.mark.parametrize("built_inside_scope", [True, False], ids=["inside_scope", "cloned"])
def test_checkpoints_over_four_replicas_resume_exactly_and_export_equals_predict(
    tmp_path, built_inside_scope
):
    x, y = tiny_data(100)

    def tpu_model(directory):
        model, _ = four_replica_model(built_inside_scope)
        tm = tpufit.TPUModel(
            model, strategy=make_strategy(), iterations_per_loop=3, model_dir=str(directory)
        )
        tm.compile(**{**compile_args(), "optimizer": keras.optimizers.Adam(0.01)})
        return tm

    first = tpu_model(tmp_path / "a")
    first.fit(x, y, batch_size=32, max_steps=6, verbose=0)  # 2 steps into epoch 1
    resumed = tpu_model(tmp_path / "a")
    assert resumed.global_step == 6
    for restored, saved in zip(resumed.model.get_weights(), first.model.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, saved)
    resumed.fit(x, y, batch_size=32, epochs=3, verbose=0)
    uninterrupted = tpu_model(tmp_path / "b")
    uninterrupted.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert resumed.global_step == uninterrupted.global_step == 12
    for ours, theirs in zip(
        resumed.model.get_weights(), uninterrupted.model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    resumed.export(tmp_path / "serving")
    serve = tf.saved_model.load(str(tmp_path / "serving")).signatures["serving_default"]
    (served,) = serve(tf.constant(x[:45])).values()
    np.testing.assert_array_equal(served.numpy(), resumed.predict(x[:45], verbose=0))


def nan_row_data(rows: int, bad_row: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = tiny_data(rows)
    x[bad_row] = np.nan
    return x, y


@inside
def test_a_nan_row_stops_fit_over_four_replicas_with_keras_weights_from_before_its_step():
    x, y = nan_row_data(160, 88)  # batch 16: step 6, the second of the second loop of 4
    model = tiny_model()
    reference = copy_model(model)
    tm = tpufit.TPUModel(model, strategy=make_strategy(4), iterations_per_loop=4)
    tm.compile(**{**compile_args(), "optimizer": keras.optimizers.Adam(0.01)})
    with pytest.raises(tpufit.NonFiniteLossError) as raised:
        tm.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert raised.value.step == 6 and tm.global_step == 5
    reference.compile(**{**compile_args(), "optimizer": keras.optimizers.Adam(0.01)})
    reference.fit(x[:80], y[:80], batch_size=16, epochs=1, shuffle=False, verbose=0)
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    optimizers = (model.optimizer.variables, reference.optimizer.variables)
    for mine, theirs in zip(*optimizers, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert model.optimizer.iterations.numpy() == 5
    assert np.isfinite(tm.predict(x[:80], batch_size=16, verbose=0)).all()


def batch_norm_model(strategy: tf.distribute.Strategy) -> tuple[keras.Model, tpufit.TPUModel]:
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Dense(8),
                keras.layers.BatchNormalization(momentum=0.5),
                keras.layers.Dense(CLASSES),
            ]
        )
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=4)
    tm.compile(**{**compile_args(), "optimizer": keras.optimizers.Adam(0.01)})
    return model, tm


@inside
def test_batch_normalization_over_four_replicas_keeps_its_statistics_from_before_the_bad_step():
    # Each replica normalizes its own rows, unlike one-device Keras: the reference is the
    # same program trained on the batches before the bad one.
    x, y = nan_row_data(160, 88)  # batch 16: step 6
    model, tm = batch_norm_model(make_strategy(4))
    with pytest.raises(tpufit.NonFiniteLossError) as raised:
        tm.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert raised.value.step == 6 and tm.global_step == 5
    reference, reference_tm = batch_norm_model(make_strategy(4))
    reference_tm.fit(x[:80], y[:80], batch_size=16, epochs=1, shuffle=False, verbose=0)
    # `weights` holds the moving statistics too.
    for mine, theirs in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-7)
    optimizers = (model.optimizer.variables, reference.optimizer.variables)
    for mine, theirs in zip(*optimizers, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-7)
    assert np.isfinite(tm.predict(x[:80], batch_size=16, verbose=0)).all()


@inside
def test_an_own_train_step_over_four_replicas_stops_right_after_the_bad_step():
    strategy = make_strategy(4)
    with strategy.scope():
        model = own_step_model()
    x, _ = nan_row_data(160, 88)
    y = np.nan_to_num(x).sum(axis=1, keepdims=True)
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=4)
    tm.compile(optimizer=keras.optimizers.SGD(0.01))
    with pytest.raises(tpufit.NonFiniteLossError, match="hold the result of global step 6"):
        tm.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert tm.global_step == 6 == model.optimizer.iterations.numpy()
