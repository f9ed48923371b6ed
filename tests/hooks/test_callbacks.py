"""Tests of tpufit/hooks/keras_callbacks.py: Keras callbacks work unchanged, checked by effect.

Where a callback's effect can be compared, it is compared with plain Keras
running the same callback on the same weights and data (`shuffle=False`).
"""

from __future__ import annotations

import csv
import http.server
import json
import threading
import urllib.parse

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    CLASSES,
    FEATURES,
    assert_same_weights,
    compile_args,
    compiled,
    keras_twin,
    tiny_data,
    tiny_model,
)

import tpufit
from tpufit.hooks.keras_callbacks import handles


class Events(keras.callbacks.Callback):
    """Records every event a callback gets, with its arguments."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            calls = object.__getattribute__(self, "calls")
            return lambda *args, **kwargs: calls.append(
                (name, *[a for a in args if not isinstance(a, dict)])
            )
        return object.__getattribute__(self, name)


def test_events_come_in_keras_order_with_loop_indices_and_validation_inside_the_epoch():
    x, y = tiny_data(48)
    events = Events()
    compiled(iterations_per_loop=4).fit(
        x, y, batch_size=8, epochs=1, validation_data=(x[:16], y[:16]), callbacks=[events],
        verbose=0,
    )  # fmt: skip
    assert events.calls == [
        ("on_train_begin",),
        ("on_epoch_begin", 0),
        ("on_train_batch_begin", 0),
        ("on_train_batch_end", 3),
        ("on_train_batch_begin", 4),
        ("on_train_batch_end", 5),
        ("on_test_begin",),
        ("on_test_batch_begin", 0),
        ("on_test_batch_end", 1),
        ("on_test_end",),
        ("on_epoch_end", 0),
        ("on_train_end",),
    ]


def test_callbacks_see_the_users_model_and_epoch_logs_with_validation_entries():
    x, y = tiny_data(48)
    model = tiny_model()
    seen = {}
    probe = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.update(logs=dict(logs), model=probe.model)
    )
    compiled(model).fit(x, y, batch_size=8, validation_data=(x, y), callbacks=[probe], verbose=0)
    assert seen["model"] is model
    assert sorted(seen["logs"]) == ["accuracy", "loss", "val_accuracy", "val_loss"]


def test_history_has_one_entry_per_epoch_equal_to_keras():
    x, y = tiny_data(40)
    model = tiny_model()
    twin = keras_twin(model)
    history = compiled(model).fit(
        x, y, batch_size=8, epochs=3, shuffle=False, validation_data=(x, y), verbose=0
    )
    expected = twin.fit(
        x, y, batch_size=8, epochs=3, shuffle=False, validation_data=(x, y), verbose=0
    )
    assert history.epoch == [0, 1, 2]
    assert sorted(history.history) == sorted(expected.history)
    for name, values in expected.history.items():
        np.testing.assert_allclose(history.history[name], values, rtol=1e-5)
    assert model.history is history


def test_early_stopping_stops_and_restores_the_best_weights():
    x, y = tiny_data(40)
    tm = compiled()
    weights_after = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights_after.append(tm.model.get_weights())
    )
    # Loss falls every epoch, so in "max" mode epoch 0 stays the best.
    stop = keras.callbacks.EarlyStopping(
        monitor="loss", mode="max", patience=2, restore_best_weights=True
    )
    history = tm.fit(x, y, batch_size=8, epochs=10, callbacks=[record, stop], verbose=0)
    assert len(history.epoch) == 3
    assert tm.global_step == 15
    for restored, best in zip(tm.model.get_weights(), weights_after[0], strict=True):
        np.testing.assert_array_equal(restored, best)
    np.testing.assert_allclose(tm.predict(x, verbose=0), tm.model(x), rtol=1e-5, atol=1e-6)


def test_model_checkpoint_saves_at_the_right_epochs(tmp_path):
    x, y = tiny_data(40)
    model = tiny_model()
    path = str(tmp_path / "e{epoch:02d}.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    compiled(model).fit(x, y, batch_size=8, epochs=3, callbacks=[checkpoint], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e01.weights.h5", "e02.weights.h5", "e03.weights.h5",
    ]  # fmt: skip
    restored = tiny_model(seed=9)
    restored.load_weights(str(tmp_path / "e03.weights.h5"))
    assert_same_weights(restored, model, rtol=0)


@pytest.mark.parametrize(
    ("iterations_per_loop", "saved_after_steps"),
    # save_freq=5 counts every step once: loops of 5 save exactly every 5 steps;
    # loops of 4 save at the first loop end with >= 5 steps since the last save.
    [(5, [5, 10, 15, 20]), (4, [8, 14, 20])],
)
def test_model_checkpoint_save_freq_counts_steps_across_loops(
    tmp_path, iterations_per_loop, saved_after_steps
):
    x, y = tiny_data(80)
    model = tiny_model()
    initial = model.get_weights()
    path = str(tmp_path / "e{epoch}-b{batch:02d}.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True, save_freq=5)
    compiled(model, iterations_per_loop).fit(
        x, y, batch_size=8, epochs=2, shuffle=False, callbacks=[checkpoint], verbose=0
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    steps = [(int(n[1]) - 1) * 10 + int(n[4:6]) for n in names]
    assert steps == saved_after_steps
    # The first file holds the weights after exactly that many steps of plain Keras.
    twin = tiny_model()
    twin.set_weights(initial)
    twin.compile(**compile_args())
    first = saved_after_steps[0]
    twin.fit(x[: first * 8], y[: first * 8], batch_size=8, shuffle=False, verbose=0)
    restored = tiny_model(seed=5)
    restored.load_weights(str(tmp_path / names[0]))
    assert_same_weights(restored, twin)


class InterruptAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_an_interrupted_fit_where_it_stopped(tmp_path):
    x, y = tiny_data(40)
    model = tiny_model()
    initial = model.get_weights()
    uninterrupted = keras_twin(model)
    uninterrupted.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)
    backup_dir = str(tmp_path / "backup")
    tm = compiled(model)
    with pytest.raises(RuntimeError, match="interrupted"):
        tm.fit(
            x, y, batch_size=8, epochs=4, shuffle=False, verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup_dir), InterruptAtEpoch(1)],
        )  # fmt: skip
    assert (tmp_path / "backup").exists()  # kept: on_train_end did not run
    fresh = tiny_model()
    fresh.set_weights(initial)
    resumed = compiled(fresh)
    history = resumed.fit(
        x, y, batch_size=8, epochs=4, shuffle=False, verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup_dir)],
    )  # fmt: skip
    assert history.epoch == [2, 3]
    assert resumed.global_step == 10
    assert_same_weights(fresh, uninterrupted)
    assert not (tmp_path / "backup").exists()  # a finished fit deletes its backup


def test_csv_logger_writes_a_row_per_epoch_equal_to_history(tmp_path):
    x, y = tiny_data(40)
    path = tmp_path / "log.csv"
    history = compiled().fit(
        x, y, batch_size=8, epochs=3, callbacks=[keras.callbacks.CSVLogger(str(path))], verbose=0
    )
    with open(path) as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], history.history["loss"])


def _scalars(event_dir) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for path in tf.io.gfile.glob(str(event_dir / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    return values


def test_tensorboard_writes_epoch_scalars_for_training_and_validation(tmp_path):
    x, y = tiny_data(40)
    board = keras.callbacks.TensorBoard(str(tmp_path), write_graph=False)
    history = compiled().fit(
        x, y, batch_size=8, epochs=2, validation_data=(x, y), callbacks=[board], verbose=0
    )
    train = _scalars(tmp_path / "train")
    np.testing.assert_allclose(train["epoch_loss"], history.history["loss"], rtol=1e-6)
    validation = _scalars(tmp_path / "validation")
    np.testing.assert_allclose(validation["epoch_loss"], history.history["val_loss"], rtol=1e-6)


def test_reduce_lr_on_plateau_lowers_the_rate_without_retracing():
    x, y = tiny_data(40)
    tm = compiled()
    reduce = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", patience=0, factor=0.5)
    history = tm.fit(x, y, batch_size=8, epochs=3, callbacks=[reduce], verbose=0)
    assert float(tm.model.optimizer.learning_rate) == pytest.approx(0.025)
    # Keras logs the rate each epoch ran with, then lowers it.
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.1, 0.05], rtol=1e-6)
    assert tm.traces["train"] == 1


def test_learning_rate_scheduler_to_zero_leaves_the_weights_unchanged():
    x, y = tiny_data(40)
    tm = compiled()
    before = tm.model.get_weights()
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.0)
    tm.fit(x, y, batch_size=8, epochs=2, callbacks=[schedule], verbose=0)
    for after, initial in zip(tm.model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(after, initial)
    assert tm.global_step == 10 and tm.traces["train"] == 1


def test_terminate_on_nan_stops_at_the_end_of_the_loop_with_the_nan():
    x, y = tiny_data(80)
    weights = np.ones(80, "float32")
    weights[20] = np.nan  # row 20 is in step 3 (batch 8), inside the first loop of 4
    tm = compiled(iterations_per_loop=4)
    history = tm.fit(
        x, y, sample_weight=weights, batch_size=8, epochs=3, shuffle=False,
        callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0,
    )  # fmt: skip
    assert tm.global_step == 4
    assert len(history.epoch) == 1


def test_lambda_callback_gets_loop_end_indices_and_logs():
    x, y = tiny_data(80)
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append((batch, sorted(logs)))
    )
    compiled(iterations_per_loop=4).fit(x, y, batch_size=8, callbacks=[callback], verbose=0)
    assert seen == [(3, ["accuracy", "loss"]), (7, ["accuracy", "loss"]), (9, ["accuracy", "loss"])]


def test_an_explicit_progbar_logger_prints_keras_progress(capsys):
    x, y = tiny_data(40)
    compiled().fit(
        x, y, batch_size=8, epochs=2, callbacks=[keras.callbacks.ProgbarLogger()], verbose=2
    )
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "loss:" in out


class _Collector(http.server.BaseHTTPRequestHandler):
    posts: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server API.
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.posts.append(json.loads(urllib.parse.parse_qs(body)["data"][0]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        del args


def test_remote_monitor_posts_every_epoch_to_a_local_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Collector.posts = []
    try:
        root = f"http://127.0.0.1:{server.server_port}"
        history = compiled().fit(
            *tiny_data(40), batch_size=8, epochs=2, verbose=0,
            callbacks=[keras.callbacks.RemoteMonitor(root=root)],
        )  # fmt: skip
    finally:
        server.shutdown()
    assert [post["epoch"] for post in _Collector.posts] == [0, 1]
    np.testing.assert_allclose([p["loss"] for p in _Collector.posts], history.history["loss"])


def test_swap_ema_weights_validates_with_the_averaged_weights_as_keras_does():
    x, y = tiny_data(40)
    model = tiny_model()

    def ema_compile_args():
        return dict(compile_args(), optimizer=keras.optimizers.SGD(0.1, use_ema=True))

    twin = keras_twin(model, **ema_compile_args())
    tm = compiled(model, **ema_compile_args())
    fit = dict(x=x, y=y, batch_size=8, epochs=2, shuffle=False, validation_data=(x, y), verbose=0)
    ours = tm.fit(**fit, callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True)])
    expected = twin.fit(**fit, callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True)])
    np.testing.assert_allclose(ours.history["val_loss"], expected.history["val_loss"], rtol=1e-5)
    assert_same_weights(model, twin)


class CountingSequential(keras.Sequential):
    """A Sequential model that counts the weights copied into it (`set_weights` calls)."""

    def set_weights(self, weights):
        self.copies += 1
        super().set_weights(weights)


def cloned_counting_model(iterations_per_loop: int):
    """`(user's model, TPUModel)`, built outside a one-device strategy: the replicas run a clone."""
    keras.utils.set_random_seed(0)
    model = CountingSequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.copies = 0
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=iterations_per_loop)
    tm.compile(**compile_args())
    assert tm._replicas.cloned
    return model, tm


def test_a_callback_handles_the_events_it_overrides_or_sets_and_none_other():
    assert handles(keras.callbacks.History(), "on_epoch_end")
    assert not handles(keras.callbacks.History(), "on_train_batch_end")
    assert handles(keras.callbacks.LambdaCallback(on_train_batch_end=print), "on_train_batch_end")
    assert not handles(keras.callbacks.LambdaCallback(on_epoch_end=print), "on_test_batch_end")

    class OldStyle(keras.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            pass

    assert handles(OldStyle(), "on_train_batch_end")
    assert not handles(OldStyle(), "on_test_batch_end")
    assert handles(Events(), "on_predict_batch_begin")


def test_no_weights_are_copied_for_events_no_callback_handles():
    x, y = tiny_data(80)

    def copies(iterations_per_loop, callbacks=()):
        model, tm = cloned_counting_model(iterations_per_loop)
        tm.fit(x, y, batch_size=8, callbacks=list(callbacks), verbose=0)
        return model.copies

    # 10 steps in 5 loops or in 1: History alone handles no batch event, so the
    # loops' batch events copy nothing into the user's model.
    assert copies(2) == copies(10)
    # A callback at each loop's end gets the current weights there: one copy per loop.
    at_batch_end = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    assert copies(2, [at_batch_end]) == copies(2) + 5


def test_weights_a_callback_sets_in_a_cloned_model_reach_the_replicas():
    x, y = tiny_data(40)
    model, tm = cloned_counting_model(iterations_per_loop=5)
    initial = model.get_weights()
    reset = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: model.set_weights(initial) if epoch == 0 else None
    )
    tm.fit(x, y, batch_size=8, epochs=2, shuffle=False, callbacks=[reset], verbose=0)
    # The second epoch trained from the initial weights again: as one epoch of Keras does.
    twin = tiny_model()
    twin.set_weights(initial)
    twin.compile(**compile_args())
    twin.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_same_weights(model, twin)
