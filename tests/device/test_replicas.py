"""Tests of tpufit/device/replicas.py: layouts, the program cache, the XLA decision, weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    FEATURES,
    compile_args,
    compiled,
    host_only_model,
    own_step_model,
    tiny_data,
    tiny_model,
)

import tpufit
from tpufit.config import Layout, Mode
from tpufit.device.finite import NanGuard
from tpufit.device.replicas import Replicas

DEFAULT = tf.distribute.get_strategy()
SPEC = tf.TensorSpec((8, FEATURES), tf.float32)


def test_keras_steps_are_padded_own_steps_run_at_true_size_and_predict_is_always_padded():
    plain = Replicas(tiny_model(), DEFAULT)
    plain.compile((), compile_args())
    assert [plain.layout_for(mode) for mode in Mode] == [Layout.PADDED] * 3
    own = Replicas(own_step_model(), DEFAULT)
    own.compile((), {"optimizer": "sgd"})
    assert own.layout_for(Mode.TRAIN) is Layout.TRUE_SIZE
    assert own.layout_for(Mode.EVAL) is Layout.TRUE_SIZE
    assert own.layout_for(Mode.PREDICT) is Layout.PADDED


def test_a_program_is_built_once_per_mode_layout_and_host_calls_and_traces_count_by_mode():
    x, y = tiny_data(40)
    tm = compiled()
    replicas = tm._replicas
    train = replicas.program(Mode.TRAIN, Layout.PADDED, "auto")
    assert replicas.program(Mode.TRAIN, Layout.PADDED, False) is train
    assert replicas.program(Mode.TRAIN, Layout.TRUE_SIZE, "auto") is not train
    extra = {"one": lambda tensors: tf.constant(1.0)}
    assert replicas.program(Mode.TRAIN, Layout.PADDED, "auto", extra) is not train
    assert train.mode is Mode.TRAIN
    tm.fit(x, y, batch_size=8, verbose=0)
    tm.predict(x, batch_size=8, verbose=0)
    assert tm.traces == {"train": 1, "predict": 1}
    assert all(type(mode) is str for mode in tm.traces)


def test_the_xla_decision_of_export_is_the_predict_programs_own():
    x, _ = tiny_data(20)
    fresh = Replicas(tiny_model(), DEFAULT)
    assert fresh.predict_jit_compile(SPEC, "auto") is True  # made now, by the predict program
    program = fresh.program(Mode.PREDICT, fresh.layout_for(Mode.PREDICT), "auto")
    assert program.jit_compile is True and program.traces == 0
    tm = tpufit.TPUModel(tiny_model())
    tm.compile(**compile_args(), jit_compile=False)
    tm.predict(x, batch_size=8, verbose=0)
    assert tm._replicas.predict_jit_compile(SPEC, "auto") is False  # predict's, not re-decided


def test_auto_falls_back_with_the_programs_one_warning_and_true_raises_as_predict_does():
    replicas = Replicas(host_only_model(), DEFAULT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert replicas.predict_jit_compile(SPEC, "auto") is False
        assert replicas.predict_jit_compile(SPEC, "auto") is False
    messages = [str(w.message) for w in caught if "tpufit" in str(w.message)]
    assert len(messages) == 1 and "predict step runs without XLA" in messages[0]
    strict = Replicas(host_only_model(), DEFAULT)
    with pytest.raises(tpufit.InvalidArgumentError, match="jit_compile=True"):
        strict.predict_jit_compile(SPEC, True)


def test_weights_go_back_to_the_replicas_only_when_the_block_changed_them():
    replicas = Replicas(tiny_model(), tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert replicas.cloned
    trained = [np.full_like(w, 0.5) for w in replicas.replica_model.get_weights()]
    replicas.replica_model.set_weights(trained)
    with replicas.user_weights():
        for held, current in zip(replicas.user_model.get_weights(), trained, strict=True):
            np.testing.assert_array_equal(held, current)
        # The replicas change under an unchanged user's model: nothing is copied back over it.
        moved = [np.full_like(w, 7.0) for w in trained]
        replicas.replica_model.set_weights(moved)
    for kept, expected in zip(replicas.replica_model.get_weights(), moved, strict=True):
        np.testing.assert_array_equal(kept, expected)
    with replicas.user_weights():
        replicas.user_model.set_weights(trained)
    for copied, expected in zip(replicas.replica_model.get_weights(), trained, strict=True):
        np.testing.assert_array_equal(copied, expected)
    zeros = [np.zeros_like(w) for w in trained]
    replicas.replica_model.set_weights(zeros)
    signed = [w.copy() for w in zeros]
    signed[0][0, 0] = -0.0  # equal to 0.0 as a value, but not the same bits
    with replicas.user_weights():
        replicas.user_model.set_weights(signed)
    assert np.signbit(replicas.replica_model.get_weights()[0][0, 0])


def test_jit_auto_decides_once_from_the_step_and_keeps_one_trace():
    key = (
        Mode.TRAIN,
        Layout.PADDED,
        (),
        NanGuard.WITHHOLD,
        False,
    )  # fit's guarded program, not eager
    x, y = tiny_data(80)
    tm = compiled(iterations_per_loop=2)
    tm.fit(x, y, batch_size=8, verbose=0)
    assert tm._replicas._programs[key].jit_compile is True
    assert tm.traces == {"train": 1}
    for setting in (False, True):
        fixed = compiled()
        fixed.compile(**compile_args(), jit_compile=setting)
        fixed.fit(x, y, batch_size=8, verbose=0)
        assert fixed._replicas._programs[key].jit_compile is setting
