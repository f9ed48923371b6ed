"""Tests of `TPUModel.export` (SavedModel for serving) and `.keras` saving of the wrapped model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import keras
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

SIZES = [0, 1, 7, 31, 32, 33, 100]


def serve(path):
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def only_output(outputs: dict) -> np.ndarray:
    (value,) = outputs.values()
    return value.numpy()


@pytest.mark.parametrize("jit_compile", ["auto", False])
def test_serving_default_takes_any_batch_size_and_equals_predict_bit_for_bit(tmp_path, jit_compile):
    x, y = tiny_data(100)
    tm = compiled(jit_compile=jit_compile, **compile_args())
    tm.fit(x, y, batch_size=16, epochs=2, verbose=0)
    tm.export(tmp_path / "serving")
    expected = tm.predict(x, verbose=0)
    signature = serve(tmp_path / "serving")
    assert signature.structured_input_signature[1][tm.model.inputs[0].name].shape.as_list() == [
        None,
        FEATURES,
    ]
    for rows in SIZES:
        np.testing.assert_array_equal(
            only_output(signature(tf.constant(x[:rows]))), expected[:rows]
        )


def test_export_batch_size_matches_predict_with_that_batch_size(tmp_path):
    x, y = tiny_data(50)
    tm = compiled()
    tm.export(tmp_path / "serving", batch_size=8)
    outputs = only_output(serve(tmp_path / "serving")(tf.constant(x)))
    np.testing.assert_array_equal(outputs, tm.predict(x, batch_size=8, verbose=0))
    with pytest.raises(tpufit.InvalidArgumentError, match="batch_size"):
        tm.export(tmp_path / "other", batch_size=0)


def test_the_saved_model_serves_in_a_process_without_tpufit_or_keras(tmp_path):
    x, _ = tiny_data(9)
    tm = compiled()
    tm.export(tmp_path / "serving")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tpufit"] = None  # importing either now fails
        sys.modules["keras"] = None
        import numpy as np
        import tensorflow as tf
        serve = tf.saved_model.load({str(tmp_path / "serving")!r}).signatures["serving_default"]
        (out,) = serve(tf.constant(np.load({str(tmp_path / "x.npy")!r}))).values()
        np.save({str(tmp_path / "out.npy")!r}, out.numpy())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), tm.predict(x, verbose=0))


def test_several_named_inputs_and_outputs_keep_their_names(tmp_path):
    keras.utils.set_random_seed(0)
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model(
        {"a": a, "b": b},
        {
            "score": keras.layers.Dense(1, name="score")(hidden),
            "cls": keras.layers.Dense(2)(hidden),
        },
    )
    tm = tpufit.TPUModel(model)
    rng = np.random.default_rng(0)
    inputs = {
        "a": rng.normal(size=(11, 3)).astype("float32"),
        "b": rng.normal(size=(11, 2)).astype("float32"),
    }
    expected = tm.predict(inputs, batch_size=4, verbose=0)
    tm.export(tmp_path / "serving", batch_size=4)
    outputs = serve(tmp_path / "serving")(a=tf.constant(inputs["a"]), b=tf.constant(inputs["b"]))
    assert sorted(outputs) == ["cls", "score"]
    for name in ("cls", "score"):
        np.testing.assert_array_equal(outputs[name].numpy(), expected[name])


def test_a_subclassed_model_exports_after_a_run_and_not_before(tmp_path):
    x, y = tiny_data(20)
    model = own_step_model()  # A functional subclass: its inputs are known.
    tpufit.TPUModel(model).export(tmp_path / "functional")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    tm = tpufit.TPUModel(Subclassed())
    with pytest.raises(tpufit.InvalidArgumentError, match="inputs are unknown"):
        tm.export(tmp_path / "subclassed")
    expected = tm.predict(x, verbose=0)
    tm.export(tmp_path / "subclassed")
    np.testing.assert_array_equal(
        only_output(serve(tmp_path / "subclassed")(tf.constant(x))), expected
    )


@pytest.mark.parametrize("predict_first", [True, False], ids=["after_predict", "before_predict"])
def test_xla_comes_from_predicts_program_with_its_one_warning(tmp_path, predict_first):
    x, _ = tiny_data(20)
    tm = tpufit.TPUModel(host_only_model())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expected = tm.predict(x, batch_size=8, verbose=0) if predict_first else None
        tm.export(tmp_path / "serving", batch_size=8)
        if not predict_first:
            expected = tm.predict(x, batch_size=8, verbose=0)
    messages = [str(w.message) for w in caught if "tpufit" in str(w.message)]
    assert len(messages) == 1 and "without XLA" in messages[0]
    np.testing.assert_array_equal(
        only_output(serve(tmp_path / "serving")(tf.constant(x))), expected
    )


def test_jit_compile_true_that_xla_cannot_honour_fails_export_as_it_fails_predict(tmp_path):
    tm = tpufit.TPUModel(host_only_model())
    tm.compile(optimizer="sgd", loss="mse", jit_compile=True)
    with pytest.raises(tpufit.InvalidArgumentError, match="jit_compile=True"):
        tm.export(tmp_path / "serving")
    with pytest.raises(tpufit.InvalidArgumentError, match="jit_compile=True"):
        tm.predict(tiny_data(8)[0], verbose=0)
    assert not (tmp_path / "serving").exists()


def test_keras_format_saving_of_the_wrapped_model_still_works_with_a_model_dir(tmp_path):
    x, y = tiny_data(64)
    model = tiny_model()
    tm = tpufit.TPUModel(model, iterations_per_loop=4, model_dir=str(tmp_path / "run"))
    tm.compile(**compile_args())
    tm.fit(x, y, batch_size=16, epochs=2, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.optimizer is not None  # compiled state travels in the .keras file
    # The loaded model resumes the same model_dir.
    again = tpufit.TPUModel(loaded, model_dir=str(tmp_path / "run"))
    assert again.global_step == 8
