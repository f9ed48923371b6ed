"""Tests of tpufit/config.py: `RunConfig` defaults and validation."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

import tpufit
from tpufit import RunConfig
from tpufit.config import parse_iterations_per_loop


def test_run_config_defaults():
    config = RunConfig()
    assert config.iterations_per_loop == "auto"
    assert config.model_dir is None
    assert config.jit_compile == "auto"
    assert config.seed is None
    # TPUEstimator's checkpoint defaults: every 10 minutes, the newest 5 kept.
    assert config.save_checkpoints_steps is None
    assert config.save_checkpoints_secs == 600
    assert config.keep_checkpoint_max == 5
    assert config.keep_checkpoint_every_n_hours is None
    assert config.warm_start_from is None


def test_run_config_keeps_valid_values():
    config = RunConfig(
        iterations_per_loop=1,
        model_dir=pathlib.Path("runs/a"),
        jit_compile=False,
        seed=7,
    )
    assert config.iterations_per_loop == 1
    assert config.model_dir == pathlib.Path("runs/a")
    assert config.jit_compile is False
    assert config.seed == 7
    assert RunConfig(model_dir="runs/b", jit_compile=True).jit_compile is True


def test_run_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().iterations_per_loop = 5


INVALID = [
    ("iterations_per_loop", 0, "0"),
    ("iterations_per_loop", -1, "-1"),
    ("iterations_per_loop", 1.5, "1.5"),
    ("iterations_per_loop", "10", "'10'"),
    ("iterations_per_loop", True, "True"),
    ("iterations_per_loop", None, "None"),
    ("iterations_per_loop", "0s", "'0s'"),
    ("iterations_per_loop", "-1s", "'-1s'"),
    ("iterations_per_loop", "2x", "'2x'"),
    ("iterations_per_loop", "fast", "'fast'"),
    ("iterations_per_loop", "Auto", "'Auto'"),
    ("iterations_per_loop", "", "''"),
    ("iterations_per_loop", "s", "'s'"),
    ("iterations_per_loop", 2.0, "2.0"),
    ("jit_compile", "yes", "'yes'"),
    ("jit_compile", 1, "1"),
    ("jit_compile", None, "None"),
    ("model_dir", 3, "3"),
    ("seed", "x", "'x'"),
    ("seed", 1.0, "1.0"),
    ("save_checkpoints_steps", 0, "0"),
    ("save_checkpoints_steps", 2.5, "2.5"),
    ("save_checkpoints_secs", -1, "-1"),
    ("save_checkpoints_secs", "60", "'60'"),
    ("keep_checkpoint_max", -1, "-1"),
    ("keep_checkpoint_max", 1.5, "1.5"),
    ("keep_checkpoint_every_n_hours", -0.5, "-0.5"),
    ("warm_start_from", 3, "3"),
]


@pytest.mark.parametrize(("name", "value", "shown"), INVALID)
def test_invalid_setting_raises_a_tpufit_error_naming_it_and_the_value(name, value, shown):
    with pytest.raises(tpufit.TPUFitError) as info:
        RunConfig(**{name: value})
    error = info.value
    assert isinstance(error, (tpufit.InvalidArgumentError, tpufit.InvalidTypeError))
    # The matching built-in still catches it.
    if isinstance(error, tpufit.InvalidArgumentError):
        assert isinstance(error, ValueError)
    else:
        assert isinstance(error, TypeError)
    message = str(error)
    assert f"`{name}`" in message
    assert f"Received: {name}={shown}" in message
    assert "expected" in message


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True])
def test_bad_iterations_per_loop_is_caught_by_except_value_or_type_error(value):
    with pytest.raises((ValueError, TypeError)):
        RunConfig(iterations_per_loop=value)


def test_bad_iterations_per_loop_message_says_what_works():
    with pytest.raises(tpufit.InvalidArgumentError, match="positive int") as info:
        RunConfig(iterations_per_loop=0)
    assert '"auto"' in str(info.value) and '"2s"' in str(info.value)


@pytest.mark.parametrize("value", ["auto", "2s", "0.5s", "500ms", "1m", "1h", ".25s", 1, 100])
def test_iterations_per_loop_takes_auto_a_duration_or_a_positive_int(value):
    assert RunConfig(iterations_per_loop=value).iterations_per_loop == value


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("auto", ("auto", 0.0)),
        ("2s", ("seconds", 2.0)),
        ("0.5s", ("seconds", 0.5)),
        ("500ms", ("seconds", 0.5)),
        ("2m", ("seconds", 120.0)),
        ("1h", ("seconds", 3600.0)),
        (7, ("steps", 7.0)),
        (np.int32(7), ("steps", 7.0)),
    ],
)
def test_parse_iterations_per_loop_reads_kind_and_amount(value, parsed):
    assert parse_iterations_per_loop(value) == parsed


def test_tpu_model_default_and_override_of_iterations_per_loop(model):
    assert tpufit.TPUModel(model).config.iterations_per_loop == "auto"
    config = RunConfig(iterations_per_loop="2s")
    assert tpufit.TPUModel(model, config=config).config.iterations_per_loop == "2s"
    tm = tpufit.TPUModel(model, iterations_per_loop=8, config=config)
    assert tm.config.iterations_per_loop == 8


def test_bad_types_are_type_errors():
    with pytest.raises(TypeError):
        RunConfig(model_dir=3)
    with pytest.raises(TypeError):
        RunConfig(seed="x")
    with pytest.raises(ValueError):
        RunConfig(jit_compile="yes")


def test_replace_returns_a_changed_copy():
    config = RunConfig(iterations_per_loop=10, seed=1)
    changed = config.replace(iterations_per_loop=20)
    assert changed.iterations_per_loop == 20
    assert changed.seed == 1
    assert config.iterations_per_loop == 10


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"iterations_per_loop": 0}, tpufit.InvalidArgumentError),
        ({"jit_compile": "yes"}, tpufit.InvalidArgumentError),
        ({"model_dir": 3}, tpufit.InvalidTypeError),
        ({"seed": "x"}, tpufit.InvalidTypeError),
    ],
)
def test_replace_validates_the_changes(changes, error):
    with pytest.raises(error, match=next(iter(changes))):
        RunConfig().replace(**changes)


def test_numpy_integers_are_accepted_like_python_ints():
    config = RunConfig(iterations_per_loop=np.int64(10), seed=np.int32(3))
    assert config.iterations_per_loop == 10
    assert config.seed == 3


def test_checkpoint_settings_keep_valid_values_and_numpy_numbers():
    start = tpufit.WarmStartSettings("runs/a", vars_to_warm_start="dense")
    config = RunConfig(
        save_checkpoints_steps=np.int64(50),
        save_checkpoints_secs=np.float32(0.5),
        keep_checkpoint_max=np.int32(0),
        keep_checkpoint_every_n_hours=2,
        warm_start_from=start,
    )
    assert config.save_checkpoints_steps == 50 and type(config.save_checkpoints_steps) is int
    assert config.save_checkpoints_secs == 0.5 and config.keep_checkpoint_max == 0
    assert config.warm_start_from is start
    assert RunConfig(warm_start_from=pathlib.Path("runs/a")).warm_start_from == pathlib.Path(
        "runs/a"
    )
    assert RunConfig(save_checkpoints_secs=None).save_checkpoints_secs is None
    short = RunConfig(warm_start_from=("runs/a", "dense")).warm_start_from
    assert short == tpufit.WarmStartSettings("runs/a", vars_to_warm_start="dense")


def test_warm_start_settings_check_their_arguments():
    with pytest.raises(tpufit.InvalidTypeError, match="ckpt_to_initialize_from"):
        tpufit.WarmStartSettings(3)
    with pytest.raises(tpufit.InvalidTypeError, match="vars_to_warm_start"):
        tpufit.WarmStartSettings("runs/a", vars_to_warm_start=["dense"])
    with pytest.raises(tpufit.InvalidArgumentError, match="regular expression"):
        tpufit.WarmStartSettings("runs/a", vars_to_warm_start="[")
