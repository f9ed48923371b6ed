"""Tests of model_dir input checks and warm start: clear tpufit errors, no file touched."""

from __future__ import annotations

import os
import stat

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import FEATURES, compile_args, tiny_data, tiny_model

import tpufit
from tpufit.model_dir import checkpoint

ROWS, BATCH = 64, 16


def snapshot(directory) -> dict:
    """Every file under `directory` with its bytes and modification time."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            found[path] = (open(path, "rb").read(), os.stat(path).st_mtime_ns)
    return found


def trained_dir(directory, model=None, epochs=1, **config) -> tpufit.TPUModel:
    x, y = tiny_data(ROWS)
    tm = tpufit.TPUModel(
        model or tiny_model(), model_dir=str(directory), config=tpufit.RunConfig(**config)
    )
    tm.compile(**compile_args())
    tm.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    return tm


def named_model(head_units: int = 3, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, activation="relu", name="body"),
            keras.layers.Dense(head_units, name="head"),
        ]
    )


def test_a_model_dir_that_is_a_file_is_a_tpufit_error_naming_it(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("mine")
    with pytest.raises(tpufit.InvalidArgumentError, match="model_dir is a file") as info:
        tpufit.TPUModel(tiny_model(), model_dir=str(path))
    assert f"Received: model_dir='{path}'" in str(info.value)
    assert path.read_text() == "mine"


@pytest.mark.parametrize("missing_child", [False, True], ids=["directory", "its_parent"])
def test_a_model_dir_without_write_permission_fails_before_anything(tmp_path, missing_child):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)  # Read-only even for root: no write bit at all.
    try:
        target = locked / "run" if missing_child else locked
        with pytest.raises(tpufit.InvalidArgumentError, match="not writable") as info:
            tpufit.TPUModel(tiny_model(), model_dir=str(target))
        assert "model_dir" in str(info.value) and "permissions" in str(info.value)
        assert os.listdir(locked) == []
    finally:
        locked.chmod(stat.S_IRWXU)


def test_a_missing_model_dir_is_created_only_at_the_first_checkpoint(tmp_path):
    target = tmp_path / "a" / "b"
    x, y = tiny_data(ROWS)
    # Without summaries: an evaluation writes its summaries into the directory.
    config = tpufit.RunConfig(save_summary_steps=None)
    tm = tpufit.TPUModel(tiny_model(), model_dir=str(target), config=config)
    tm.compile(**compile_args())
    tm.predict(x, verbose=0)
    tm.evaluate(x, y, verbose=0)
    assert not (tmp_path / "a").exists()
    tm.fit(x, y, batch_size=BATCH, verbose=0)
    assert tf.train.latest_checkpoint(str(target)).endswith("ckpt-4")


def test_a_checkpoint_of_another_model_fails_before_training_and_touches_nothing(tmp_path):
    trained_dir(tmp_path)
    before = snapshot(tmp_path)
    other = named_model(head_units=5)
    weights = other.get_weights()
    with pytest.raises(tpufit.IncompatibleCheckpointError) as info:
        tpufit.TPUModel(other, model_dir=str(tmp_path))
    message = str(info.value)
    assert (
        "does not belong to this model" in message and "(8, 3)" in message and "(8, 5)" in message
    )
    assert isinstance(info.value, ValueError) and "ckpt-4" in message
    assert snapshot(tmp_path) == before
    for now, then in zip(other.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(now, then)


def test_an_unbuilt_model_is_checked_against_the_checkpoint_at_its_first_run(tmp_path):
    trained_dir(tmp_path)
    before = snapshot(tmp_path)
    x, y = tiny_data(ROWS)
    unbuilt = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(3)])
    tm = tpufit.TPUModel(unbuilt, model_dir=str(tmp_path))
    tm.compile(**compile_args())
    with pytest.raises(tpufit.IncompatibleCheckpointError, match="variable 0"):
        tm.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    assert tm.global_step == 4  # The restored step: nothing trained.
    assert snapshot(tmp_path) == before


def test_a_directory_holding_a_foreign_checkpoint_is_refused(tmp_path):
    tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "ckpt-1"))
    tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf.Variable(1.0)), str(tmp_path), max_to_keep=1
    ).save()
    before = snapshot(tmp_path)
    with pytest.raises(tpufit.IncompatibleCheckpointError, match="not written by tpufit"):
        tpufit.TPUModel(tiny_model(), model_dir=str(tmp_path))
    assert snapshot(tmp_path) == before


def test_warm_start_takes_every_weight_but_not_the_global_step_or_optimizer(tmp_path):
    source = trained_dir(tmp_path / "source", epochs=2)
    x, y = tiny_data(ROWS)
    config = tpufit.RunConfig(warm_start_from=str(tmp_path / "source"))
    tm = tpufit.TPUModel(tiny_model(seed=3), model_dir=str(tmp_path / "new"), config=config)
    for ours, theirs in zip(tm.model.get_weights(), source.model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert tm.global_step == 0
    tm.compile(**{**compile_args(), "optimizer": keras.optimizers.Adam(0.01)})
    tm.fit(x, y, batch_size=BATCH, verbose=0)
    assert tm.global_step == 4 and int(tm.model.optimizer.iterations.numpy()) == 4
    # The model_dir now holds a checkpoint: a restart resumes it and ignores warm_start_from.
    restarted = tpufit.TPUModel(tiny_model(seed=5), model_dir=str(tmp_path / "new"), config=config)
    for ours, theirs in zip(restarted.model.get_weights(), tm.model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert restarted.global_step == 4


def test_warm_start_with_a_regex_takes_only_the_matching_weights_by_position(tmp_path):
    source = trained_dir(tmp_path / "source", model=named_model())
    prefix = tf.train.latest_checkpoint(str(tmp_path / "source"))
    start = tpufit.WarmStartSettings(prefix, vars_to_warm_start="body")
    fresh = named_model(head_units=5, seed=4)  # Another head: its shape is left out by the regex.
    head_before = fresh.get_weights()[2:]
    tm = tpufit.TPUModel(fresh, config=tpufit.RunConfig(warm_start_from=start))
    weights = tm.model.get_weights()
    for ours, theirs in zip(weights[:2], source.model.get_weights()[:2], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, initial in zip(weights[2:], head_before, strict=True):
        np.testing.assert_array_equal(ours, initial)


def test_warm_start_errors_name_the_problem_and_change_no_weight(tmp_path):
    trained_dir(tmp_path / "source", model=named_model())
    fresh = named_model(head_units=5, seed=4)
    weights = fresh.get_weights()
    everything = tpufit.RunConfig(warm_start_from=str(tmp_path / "source"))
    with pytest.raises(tpufit.InvalidArgumentError, match="does not fit this model") as info:
        tpufit.TPUModel(fresh, config=everything)
    assert "head/kernel" in str(info.value) and "vars_to_warm_start" in str(info.value)
    for now, then in zip(fresh.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(now, then)
    nothing = tpufit.RunConfig(warm_start_from=str(tmp_path / "empty"))
    with pytest.raises(tpufit.InvalidArgumentError, match="Nothing to warm-start from"):
        tpufit.TPUModel(fresh, config=nothing)
    none_matches = tpufit.WarmStartSettings(str(tmp_path / "source"), vars_to_warm_start="^x$")
    with pytest.raises(tpufit.InvalidArgumentError, match="No weight to warm-start"):
        tpufit.TPUModel(fresh, config=tpufit.RunConfig(warm_start_from=none_matches))
    with pytest.raises(tpufit.InvalidArgumentError, match="vars_to_warm_start"):
        tpufit.WarmStartSettings("x", vars_to_warm_start="(")


def test_the_checkpoint_layout_reads_without_the_models_code(tmp_path):
    tm = trained_dir(tmp_path, epochs=2)
    reader = checkpoint.Reader(tf.train.latest_checkpoint(str(tmp_path)))
    assert reader.count("weights") == len(tm.model.weights)
    assert reader.count("optimizers") == 1
    assert reader.state() == {
        "global_step": 8,
        "epoch": 2,
        "step_in_epoch": 0,
        "data_seed": reader.state()["data_seed"],
    }
    assert reader.state()["data_seed"] >= 0  # fit shuffled with a drawn seed, kept for resumes
