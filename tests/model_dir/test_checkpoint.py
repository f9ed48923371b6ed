"""Tests of model_dir checkpoints: cadence, contents, automatic resume, max_steps, NaN guard.

Everything is checked by its effect on real files: the checkpoints TensorFlow
wrote (read back with `tf.train.load_checkpoint`), the `checkpoint` state file,
and the weights of a resumed run against an uninterrupted one.
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import FEATURES, TinyGAN, compile_args, own_step_model, tiny_data, tiny_model

import tpufit
from tpufit.model_dir import checkpoint

ROWS, BATCH = 100, 16  # 7 steps per epoch: 6 full batches and a padded one.


def make(model_dir, model=None, loop=4, optimizer=None, **config):
    """A TPUModel of the tiny model (or `model`) with a model_dir, compiled with SGD or Adam."""
    config.setdefault("save_checkpoints_secs", None)
    tm = tpufit.TPUModel(
        model or tiny_model(),
        iterations_per_loop=loop,
        model_dir=None if model_dir is None else str(model_dir),
        config=tpufit.RunConfig(**config),
    )
    args = compile_args()
    if optimizer is not None:
        args["optimizer"] = optimizer
    tm.compile(**args)
    return tm


def with_dropout(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
        ]
    )


def files(directory) -> dict[str, bytes]:
    """The checkpoint files of `directory` and their bytes (not the summaries' folders)."""
    paths = {name: os.path.join(directory, name) for name in os.listdir(directory)}
    return {name: open(path, "rb").read() for name, path in paths.items() if os.path.isfile(path)}


def checkpoint_steps(directory) -> list[int]:
    state = tf.train.get_checkpoint_state(str(directory))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]


def assert_same_weights(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_checkpoints_come_every_n_steps_at_loop_ends_and_at_the_end_keeping_the_newest(tmp_path):
    x, y = tiny_data(ROWS)
    tm = make(tmp_path, save_checkpoints_steps=5, keep_checkpoint_max=2)
    tm.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    # Loops end at global steps 4, 7, 11, 14, 18, 21: the first loop end 5 or more
    # steps after the last save saves (7, 14, 21); only the newest two are kept.
    assert checkpoint_steps(tmp_path) == [14, 21]
    assert sorted(files(tmp_path)) == [
        "checkpoint", "ckpt-14.data-00000-of-00001", "ckpt-14.index",
        "ckpt-21.data-00000-of-00001", "ckpt-21.index",
    ]  # fmt: skip
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-21")


@pytest.mark.parametrize(("secs", "expected"), [(0, [4, 7, 11, 14, 18, 21]), (3600, [21])])
def test_time_cadence_saves_at_loop_ends_once_the_seconds_passed(tmp_path, secs, expected):
    x, y = tiny_data(ROWS)
    tm = make(tmp_path, save_checkpoints_secs=secs, keep_checkpoint_max=0)
    tm.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    assert checkpoint_steps(tmp_path) == expected


def test_a_checkpoint_holds_weights_optimizer_state_rng_global_step_and_epoch(tmp_path):
    x, y = tiny_data(ROWS)
    tm = make(tmp_path, model=with_dropout(), optimizer=keras.optimizers.Adam(0.01))
    tm.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    for i, weight in enumerate(tm.model.get_weights()):
        np.testing.assert_array_equal(reader.get_tensor(checkpoint.key("weights", i)), weight)
    optimizer = tm.model.optimizer
    for i, variable in enumerate(optimizer.variables):
        stored = reader.get_tensor(checkpoint.key("optimizers", 0, i))
        np.testing.assert_array_equal(stored, variable.numpy())
    assert int(reader.get_tensor(checkpoint.key("optimizers", 0, 0))) == 14  # Adam's iterations
    seed_state = [v for v in tm.model.variables if "seed_generator" in v.path][0]
    np.testing.assert_array_equal(reader.get_tensor(checkpoint.key("rng", 0)), seed_state.numpy())
    state = {
        name: int(reader.get_tensor(checkpoint.key("state", name)))
        for name in ("global_step", "epoch", "step_in_epoch")
    }
    assert state == {"global_step": 14, "epoch": 2, "step_in_epoch": 0}


def test_a_new_tpumodel_restores_the_latest_checkpoint_exactly_and_fit_continues_its_epochs(
    tmp_path,
):
    x, y = tiny_data(ROWS)
    adam = lambda: keras.optimizers.Adam(0.01)  # noqa: E731
    first = make(tmp_path, model=with_dropout(), optimizer=adam())
    first.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    saved = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    np.random.seed(12345)  # A restarted process draws other shuffle seeds; the checkpoint's wins.
    resumed = make(tmp_path, model=with_dropout(seed=7), optimizer=adam())
    # Restored before any run: the weights, bit for bit, and the global step.
    for i, weight in enumerate(resumed.model.get_weights()):
        np.testing.assert_array_equal(weight, saved.get_tensor(checkpoint.key("weights", i)))
    assert resumed.global_step == 14
    history = resumed.fit(x, y, batch_size=BATCH, epochs=4, verbose=0)
    assert history.epoch == [2, 3]
    assert resumed.global_step == 28
    uninterrupted = make(tmp_path / "other", model=with_dropout(), optimizer=adam())
    uninterrupted.fit(x, y, batch_size=BATCH, epochs=4, verbose=0)
    assert_same_weights(resumed.model.get_weights(), uninterrupted.model.get_weights())


@pytest.mark.parametrize("build", [with_dropout, own_step_model], ids=["keras_step", "own_step"])
def test_a_run_resumed_in_the_middle_of_an_epoch_equals_an_uninterrupted_one(tmp_path, build):
    x, y = tiny_data(ROWS)
    y = y.astype("float32")[:, None] if build is own_step_model else y

    def tpu_model(directory):
        tm = tpufit.TPUModel(build(), iterations_per_loop=4, model_dir=str(directory))
        if build is own_step_model:
            tm.compile(optimizer=keras.optimizers.Adam(0.01))
        else:
            tm.compile(**{**compile_args(), "optimizer": keras.optimizers.Adam(0.01)})
        return tm

    stopped = tpu_model(tmp_path / "a")
    stopped.fit(x, y, batch_size=BATCH, max_steps=10, verbose=0)  # 3 steps into epoch 1
    assert checkpoint_steps(tmp_path / "a") == [10]
    resumed = tpu_model(tmp_path / "a")
    history = resumed.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    assert history.epoch == [1, 2] and resumed.global_step == 21
    uninterrupted = tpu_model(tmp_path / "b")
    uninterrupted.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    assert_same_weights(resumed.model.get_weights(), uninterrupted.model.get_weights())


@pytest.mark.parametrize("build", [with_dropout, own_step_model], ids=["keras_step", "own_step"])
def test_a_run_resumed_mid_pass_with_steps_per_epoch_below_the_data_equals_an_uninterrupted_one(
    tmp_path, build
):
    # 7 steps a pass in epochs of 3: 3, 3, 1 (the pass ends) | 3, 3, 1.
    x, y = tiny_data(ROWS)
    y = y.astype("float32")[:, None] if build is own_step_model else y

    def tpu_model(directory):
        tm = tpufit.TPUModel(build(), iterations_per_loop=2, model_dir=str(directory))
        if build is own_step_model:
            tm.compile(optimizer=keras.optimizers.Adam(0.01))
        else:
            tm.compile(**{**compile_args(), "optimizer": keras.optimizers.Adam(0.01)})
        return tm

    fit_args = dict(batch_size=BATCH, steps_per_epoch=3, verbose=0)
    stopped = tpu_model(tmp_path / "a")
    with pytest.warns(UserWarning, match="ran out of data"):
        stopped.fit(x, y, max_steps=8, **fit_args)  # 1 step into epoch 3, the second pass
    assert checkpoint_steps(tmp_path / "a") == [8]
    resumed = tpu_model(tmp_path / "a")
    with pytest.warns(UserWarning, match="ran out of data"):
        history = resumed.fit(x, y, epochs=6, **fit_args)
    assert history.epoch == [3, 4, 5] and resumed.global_step == 14
    uninterrupted = tpu_model(tmp_path / "b")
    with pytest.warns(UserWarning, match="ran out of data"):
        uninterrupted.fit(x, y, epochs=6, **fit_args)
    assert_same_weights(resumed.model.get_weights(), uninterrupted.model.get_weights())


def test_max_steps_trains_to_that_global_step_and_a_second_call_trains_no_further(tmp_path):
    x, y = tiny_data(ROWS)
    tm = make(tmp_path)
    history = tm.fit(x, y, batch_size=BATCH, max_steps=17, verbose=0)  # epochs 0, 1, 2 (3 steps)
    assert tm.global_step == 17 and history.epoch == [0, 1, 2]
    before = files(tmp_path)
    again = tm.fit(x, y, batch_size=BATCH, max_steps=17, verbose=0)
    assert tm.global_step == 17 and again.epoch == []
    restarted = make(tmp_path)
    restarted.fit(x, y, batch_size=BATCH, max_steps=17, verbose=0)
    assert restarted.global_step == 17
    assert files(tmp_path) == before  # Nothing trained, nothing written.
    restarted.fit(x, y, batch_size=BATCH, max_steps=20, verbose=0)
    assert restarted.global_step == 20 and checkpoint_steps(tmp_path)[-1] == 20
    without_dir = make(None)
    without_dir.fit(x, y, batch_size=BATCH, max_steps=9, verbose=0)
    without_dir.fit(x, y, batch_size=BATCH, max_steps=9, verbose=0)
    assert without_dir.global_step == 9


def test_fit_to_an_epoch_the_model_dir_already_reached_warns_and_trains_nothing(tmp_path):
    x, y = tiny_data(ROWS)
    make(tmp_path).fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    tm = make(tmp_path)
    weights = tm.model.get_weights()
    with pytest.warns(UserWarning, match="already at epoch 2"):
        history = tm.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    assert history.epoch == [] and tm.global_step == 14
    assert_same_weights(tm.model.get_weights(), weights)


def test_a_non_finite_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = tiny_data(ROWS)
    tm = make(tmp_path, save_checkpoints_steps=1)
    tm.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    before = files(tmp_path)
    bad = x.copy()
    bad[40] = np.nan  # In the third batch: global step 7 + 3.
    with pytest.raises(tpufit.NonFiniteLossError) as info:
        tm.fit(bad, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    assert info.value.step == 10 and "global step 10" in str(info.value)
    assert files(tmp_path) == before  # The loop with the NaN wrote nothing, nor did the end.
    # A guard given by the user replaces the default one; still nothing is saved.
    tm.fit(bad, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
           hooks=[tpufit.NanGuardHook(fail=False)])  # fmt: skip
    assert files(tmp_path) == before
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-7")


def test_without_the_nan_guard_a_non_finite_loss_saves_nothing_more(tmp_path):
    x, y = tiny_data(ROWS)
    tm = make(tmp_path, nan_guard=False)
    tm.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    before = files(tmp_path)
    x[40] = np.nan
    history = tm.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert np.isnan(history.history["loss"][0]) and tm.global_step == 14  # trained on, as Keras
    assert files(tmp_path) == before


def test_an_interrupted_fit_writes_no_checkpoint_at_its_end_and_the_next_fit_resumes(tmp_path):
    x, y = tiny_data(ROWS)

    class Interrupt(tpufit.Hook):
        loops = 0

        def after_run(self, ctx, values):
            self.loops += 1
            if self.loops == 3:
                raise KeyboardInterrupt

    tm = make(tmp_path, save_checkpoints_steps=4)
    with pytest.raises(KeyboardInterrupt):
        tm.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, hooks=[Interrupt()])
    assert tm.global_step == 11 and checkpoint_steps(tmp_path) == [4]  # Hooks run in order:
    # the interrupt came before the checkpoint hook saw loop 3, and `end` saves nothing.
    tm.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    assert tm.global_step == 21
    uninterrupted = make(tmp_path / "other")
    uninterrupted.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    assert_same_weights(tm.model.get_weights(), uninterrupted.model.get_weights())


def test_evaluate_and_predict_of_a_new_tpumodel_use_the_restored_weights(tmp_path):
    x, y = tiny_data(ROWS)
    trained = make(tmp_path)
    trained.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    expected = trained.predict(x, verbose=0)
    unbuilt = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    restored = tpufit.TPUModel(unbuilt, model_dir=str(tmp_path))  # Restored at its first run.
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    assert restored.global_step == 14
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restored.compile(**compile_args())
        restored.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)  # optimizer state restored too
    assert restored.global_step == 21


def test_the_optimizer_state_is_restored_at_compile_so_the_learning_rate_can_be_changed(tmp_path):
    x, y = tiny_data(ROWS)
    first = make(tmp_path, optimizer=keras.optimizers.Adam(0.01))
    first.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    saved = [v.numpy() for v in first.model.optimizer.variables]
    tm = tpufit.TPUModel(tiny_model(seed=2), model_dir=str(tmp_path))
    tm.compile(**{**compile_args(), "optimizer": keras.optimizers.Adam(0.5)})
    for variable, value in zip(tm.model.optimizer.variables, saved, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)  # iterations, lr 0.01, moments
    tm.model.optimizer.learning_rate = 0.001
    tm.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    assert np.isclose(float(tm.model.optimizer.learning_rate), 0.001)
    assert int(tm.model.optimizer.iterations.numpy()) == 14


def test_a_gan_logging_no_loss_checkpoints_and_resumes_with_fresh_optimizers(tmp_path):
    x, _ = tiny_data(64)

    def gan():
        tm = tpufit.TPUModel(TinyGAN(), iterations_per_loop=2, model_dir=str(tmp_path))
        tm.compile(
            keras.optimizers.Adam(1e-3),
            keras.optimizers.Adam(1e-3),
            keras.losses.BinaryCrossentropy(from_logits=True),
        )
        return tm

    first = gan()
    first.fit(x, batch_size=16, epochs=2, verbose=0)  # logs d_loss and g_loss, no "loss"
    assert checkpoint_steps(tmp_path) == [8]
    resumed = gan()
    resumed.predict(x, verbose=0)  # A subclassed model is built, and restored, at its first run.
    assert_same_weights(resumed.model.get_weights(), first.model.get_weights())
    with pytest.warns(UserWarning, match="optimizer state in the checkpoint was not restored"):
        history = resumed.fit(x, batch_size=16, epochs=3, verbose=0)
    assert history.epoch == [2] and checkpoint_steps(tmp_path) == [8, 12]


def test_keep_checkpoint_every_n_hours_keeps_swept_checkpoints_on_disk(tmp_path):
    x, y = tiny_data(ROWS)
    tm = make(
        tmp_path,
        save_checkpoints_steps=7,
        keep_checkpoint_max=1,
        keep_checkpoint_every_n_hours=1e-9,
    )
    tm.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    assert checkpoint_steps(tmp_path) == [21]  # The state file lists the newest only ...
    kept = sorted(int(n[5:-6]) for n in os.listdir(tmp_path) if n.endswith(".index"))
    assert kept == [7, 14, 21]  # ... but a checkpoint per (tiny) period stays on disk.
