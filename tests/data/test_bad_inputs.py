"""Bad-input fuzzing: malformed data gives Keras's result or a tpufit error, never a raw one.

Hypothesis draws malformed inputs of every kind issue 11 lists (wrong ranks and
dtypes, NaN and infinity, empty arrays, mismatched lengths, ragged lists,
`None` inside dicts, missing or extra dict keys, bad targets and weights) for
`fit`, `evaluate` and `predict` of the tiny model and of a model taking a dict,
as arrays or, where TensorFlow can make one, as a `tf.data.Dataset` of batches.
Each either runs and equals plain Keras on the same weights (Keras takes it
too: NaN in `x` gives NaN rows), or raises a `tpufit.TPUFitError` with the
weights unchanged. Anything else (a `TypeError`, `ValueError` or TensorFlow
`OpError` from inside) fails the test. A NaN loss in training may also stop
`fit` with `tpufit.NonFiniteLossError`, after its steps changed the weights.

The two models, their Keras twins and their programs are shared by every
example (weights reset before each), so only new data specs cost a trace.
tpufit runs them without XLA, as plain Keras runs them on a CPU: XLA's kernels
treat NaN and infinity otherwise (its relu keeps a NaN that oneDNN's turns
into 0), which says nothing about how tpufit handles the data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASSES, FEATURES, compile_args, copy_model, tiny_data, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpufit

BATCH = 4
MODES = ("fit", "evaluate", "predict")
EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def dict_model() -> keras.Model:
    """Inputs `{"age": 2 floats, "city": 1 int}` -> 3 logits."""
    keras.utils.set_random_seed(0)
    age = keras.Input((2,), name="age")
    city = keras.Input((1,), name="city", dtype="int32")
    features = keras.layers.Concatenate()([age, keras.ops.cast(city, "float32")])
    return keras.Model({"age": age, "city": city}, keras.layers.Dense(CLASSES)(features))


@functools.cache
def pair(name: str) -> tuple:
    """`(tpu_model, keras_twin, initial_weights)` of "tiny" or "dict", shared by the examples."""
    tm = tpufit.TPUModel(tiny_model() if name == "tiny" else dict_model(), iterations_per_loop=4)
    tm.compile(jit_compile=False, **compile_args())
    return tm, copy_model(tm.model), [w.copy() for w in tm.model.get_weights()]


# --- malformed data -------------------------------------------------------------------


def labels(rows: int) -> np.ndarray:
    return np.arange(rows) % CLASSES


def bad_shapes(x: np.ndarray) -> list:
    ranks = [x[:, 0], x[:, :, None], np.repeat(x[:, :, None], 2, -1), x[None], x[:, None]]
    widths = [x[:, :0], x[:, :1], x[:, :-1], np.concatenate([x, x[:, :1]], 1)]
    return ranks + widths


def bad_dtypes(x: np.ndarray) -> list:
    numbers = [x > 0, x.astype("int64"), x.astype("uint8"), x.astype("float16")]
    return [x.astype(str), x.astype(object), x.astype("complex64"), x.tolist(), *numbers]


def with_non_finite(draw, x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype="float32")
    if x.size:
        where = draw(st.lists(st.integers(0, x.size - 1), min_size=1, max_size=3))
        x.flat[where] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x


def ragged(x: np.ndarray) -> list:
    rows = [list(row[: 1 + i % FEATURES]) for i, row in enumerate(x)]
    as_objects = np.empty(len(rows), dtype=object)
    as_objects[:] = rows
    return [rows, as_objects, [x, x[:-1]], [x, x[:, :3]], [x.tolist()]]


def bad_targets(y: np.ndarray, streamed: bool) -> list:
    """Malformed labels; labels outside the classes only in memory, where tpufit reads them."""
    nan = y.astype("float32")
    nan[::2] = np.nan
    shapes = [y[:, None], y[:, None, None], np.stack([y, y], 1), y[:-1]]
    values = [y.astype(str), y + 0.5, y.astype(bool)]
    if not streamed:
        values += [nan, y - 1, y + CLASSES]
    return [*values, *shapes, None, [y, y], {"y": y}]


def bad_weights(rows: int) -> list:
    ones = np.ones(rows)
    shapes = [np.ones((rows, 3)), ones[:, None], ones[:, None, None], np.ones(rows + 1)]
    return [ones * np.nan, ones.astype(str), -ones, {"w": ones}, *shapes]


@st.composite
def tiny_cases(draw, model: keras.Model, streamed: bool) -> tuple:
    """`(x, y, sample_weight)` for the tiny model, at least one part malformed.

    `streamed` data is given as a dataset: its label values reach the step unread.
    """
    rows = draw(st.integers(0, 9))
    x, _ = tiny_data(rows)
    y = labels(rows)
    name = model.inputs[0].name
    # (Keyed by the input's generated name, a dict would not fit the Keras twin's input.)
    dicts = [{"x": x}, {"a": x, "b": None}, {}, {name: None}]
    broken_x = [*bad_shapes(x), *bad_dtypes(x), *ragged(x), *dicts, (x, None), None]
    broken_x.append(with_non_finite(draw, x))
    part = draw(st.sampled_from(["x", "y", "sample_weight"]))
    if part == "x":
        return draw(st.sampled_from(broken_x)), y, None
    if part == "y":
        return x, draw(st.sampled_from(bad_targets(y, streamed))), None
    return x, y, draw(st.sampled_from(bad_weights(rows)))


@st.composite
def dict_cases(draw, model: keras.Model, streamed: bool) -> tuple:
    """`(x, y, sample_weight)` for the dict model, its `x` malformed (streamed or not)."""
    rows = draw(st.integers(0, 9))
    features, _ = tiny_data(rows)
    age, city = features[:, :2], (np.arange(rows) % 5)[:, None].astype("int32")
    good = {"age": age, "city": city}
    key = draw(st.sampled_from(["age", "city"]))
    changed = [None, age[:, :1], age[:, :, None], age.astype(str), age[:-1], features]
    changed += [with_non_finite(draw, good[key]), good[key][:, 0]]
    other = draw(st.sampled_from(changed))
    broken = [
        {key: good[key]},
        {**good, "aaa": age},
        {**good, "zzz": age},
        {**good, key: other},
        {**good, key: {"inner": good[key]}},
        [age, city],
        [city, age],
        (age,),
        age,
    ]
    return draw(st.sampled_from(broken)), labels(rows), None


# --- running a case through tpufit and Keras -----------------------------------------------


def batched(x, y, sample_weight) -> tuple | None:
    """The case as a user's dataset of batches, or `None` where TensorFlow cannot make one."""
    if x is None or (y is None and sample_weight is not None):
        return None
    parts = tuple(part for part in (x, y, sample_weight) if part is not None)
    try:
        dataset = tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else x)
    except (ValueError, TypeError, tf.errors.OpError):
        return None
    return dataset.batch(BATCH), None, None


def run(model, mode: str, x, y, sample_weight):
    """What `mode` returns for the data: predictions, the logs, or the history and weights."""
    size = None if isinstance(x, tf.data.Dataset) else BATCH  # A dataset is batched.
    if mode == "predict":
        return model.predict(x, batch_size=size, verbose=0)
    if mode == "evaluate":
        return model.evaluate(
            x, y, sample_weight=sample_weight, batch_size=size, verbose=0, return_dict=True
        )
    history = model.fit(
        x, y, sample_weight=sample_weight, batch_size=size, shuffle=False, verbose=0
    )
    keras_model = model.model if isinstance(model, tpufit.TPUModel) else model
    return history.history, keras_model.get_weights()


def assert_same_result(ours, theirs) -> None:
    assert type(ours) is type(theirs)
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
    for a, b in zip(result_leaves(ours), result_leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, equal_nan=True)


def result_leaves(result) -> list:
    if isinstance(result, dict):
        return [leaf for key in sorted(result) for leaf in result_leaves(result[key])]
    if isinstance(result, (list, tuple)):
        return [leaf for item in result for leaf in result_leaves(item)]
    return [np.asarray(result, dtype="float64")]


def assert_keras_result_or_tpufit_error(name: str, mode: str, case: tuple) -> None:
    tm, twin, initial = pair(name)
    tm.model.set_weights(initial)
    try:
        ours = run(tm, mode, *case)
    except tpufit.errors.NonFiniteLossError:
        return  # A NaN loss stopped fit: its steps ran, as Keras's would have.
    except tpufit.TPUFitError:
        for before, after in zip(initial, tm.model.get_weights(), strict=True):
            np.testing.assert_array_equal(before, after)
        return
    twin.set_weights(initial)
    # Compiled afresh: Keras's step functions relax to unknown shapes after a few retraces.
    twin.compile(**compile_args())
    assert_same_result(ours, run(twin, mode, *case))


def fuzz(name: str, cases: Callable) -> Callable:
    @EXAMPLES
    @given(mode=st.sampled_from(MODES), as_dataset=st.booleans(), data=st.data())
    def test(mode, as_dataset, data):
        # Drawn here, after the shared models exist: building one seeds `random`.
        case = data.draw(cases(pair(name)[0].model, as_dataset), label="(x, y, sample_weight)")
        if as_dataset:
            case = batched(*case) or case
        assert_keras_result_or_tpufit_error(name, mode, case)

    return test


test_malformed_data_for_the_tiny_model = fuzz("tiny", tiny_cases)
test_malformed_dicts_for_a_dict_model = fuzz("dict", dict_cases)


@pytest.mark.parametrize("mode", MODES)
def test_well_formed_data_runs_like_keras(mode):
    # The harness itself: good data passes through both and agrees.
    x, _ = tiny_data(9)
    assert_keras_result_or_tpufit_error("tiny", mode, (x, labels(9), None))
    features = {"age": x[:, :2], "city": (np.arange(9) % 5)[:, None].astype("int32")}
    assert_keras_result_or_tpufit_error("dict", mode, (features, labels(9), None))
