"""Shared fixtures: one tiny model and its data, and a way to run pytest in a child process.

Setting `TPUFIT_TEST_REPLICAS=N` before TensorFlow starts splits the CPU into
N logical devices, so multi-replica tests run under a real `MirroredStrategy`;
`run_pytest_with_replicas` starts such a child run.

Setting `TPUFIT_TEST_INFEED=resident` or `=stream` makes `RunConfig(infeed="auto")`
(the default) serve every array input that way, so a selection of tests runs
under either infeed (`_infeed_forced_by_environment`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_REPLICAS = int(os.environ.get("TPUFIT_TEST_REPLICAS", "1"))
_INFEED = os.environ.get("TPUFIT_TEST_INFEED", "auto")
if _REPLICAS > 1:
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * _REPLICAS
    )

import keras  # noqa: E402

from tpufit.data import resident  # noqa: E402

TESTS = Path(__file__).parent
FEATURES = 6
CLASSES = 3


def replicas() -> int:
    """The number of logical CPU devices this test process runs with."""
    return _REPLICAS


def make_strategy(num_replicas: int | None = None) -> tf.distribute.Strategy:
    """`MirroredStrategy` over the first `num_replicas` logical CPUs (default: all).

    One replica gives TensorFlow's default strategy. One strategy per replica
    count serves the whole process: two `MirroredStrategy` objects over the
    same devices number their collectives alike, and TensorFlow then mixes
    up the all-reduces of different programs ("Shape mismatch in the
    collective instance").
    """
    return _strategy_over(num_replicas or _REPLICAS)


@functools.cache
def _strategy_over(num_replicas: int) -> tf.distribute.Strategy:
    if num_replicas == 1:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_replicas)])


@pytest.fixture(autouse=True)
def _infeed_forced_by_environment(monkeypatch):
    """`infeed="auto"` as `TPUFIT_TEST_INFEED` says: always resident, always streamed, or as is."""
    if _INFEED == "resident":
        monkeypatch.setattr(resident, "budget_bytes", lambda one_pass=False: sys.maxsize)
    elif _INFEED == "stream":
        auto = resident.iterator_for
        monkeypatch.setattr(
            resident,
            "iterator_for",
            lambda feed, choice, strategy: (
                None if choice == resident.AUTO else auto(feed, choice, strategy)
            ),
        )


def tiny_model(seed: int = 0) -> keras.Model:
    """The shared tiny classifier: 6 features -> 8 relu -> 3 logits, fixed weights."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )


class VirtualClock:
    """Seconds that pass only when a `Sleep` layer (or a test) says so.

    Installed as the clock loops are timed by (`tpufit.run.epochs.clock`), it
    makes loop lengths learned from step times exact, whatever the machine.
    """

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Sleep(keras.layers.Layer):
    """Passes its input through after `seconds` on the host: a known step time.

    With a `VirtualClock`, the seconds pass on that clock instead of really.
    """

    def __init__(self, seconds: float, clock: VirtualClock | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seconds = seconds
        self.sleep = time.sleep if clock is None else clock.sleep

    def call(self, x):
        token = tf.py_function(lambda: self.sleep(self.seconds) or 0.0, [], tf.float32)
        return x + 0.0 * tf.reshape(token, [])  # py_function outputs have no static shape

    def compute_output_shape(self, input_shape):
        return input_shape


def sleepy_model(seconds: float, seed: int = 0, clock: VirtualClock | None = None) -> keras.Model:
    """`tiny_model` whose every step takes `seconds` first (run it with jit_compile=False)."""
    tiny = tiny_model(seed)
    return keras.Sequential([keras.Input((FEATURES,)), Sleep(seconds, clock), *tiny.layers])


@pytest.fixture
def virtual_clock(monkeypatch) -> VirtualClock:
    """A `VirtualClock` that times every loop of the test's runs."""
    from tpufit.run import epochs

    clock = VirtualClock()
    monkeypatch.setattr(epochs, "clock", clock)
    return clock


class HostOnlyLayer(keras.layers.Layer):
    """A layer XLA cannot compile: it calls back into Python."""

    def call(self, inputs):
        out = tf.numpy_function(lambda a: a * 2.0, [inputs], tf.float32)
        out.set_shape(inputs.shape)
        return out


def host_only_model() -> keras.Model:
    """A model XLA cannot compile: `HostOnlyLayer`, then a dense layer of 2 outputs."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((FEATURES,)), HostOnlyLayer(), keras.layers.Dense(2)])


class RowCounter(keras.metrics.Metric):
    """Counts the rows it sees, ignoring `sample_weight` (accepted, unused): sees padding rows."""

    def __init__(self, name="row_counter", **kwargs):
        super().__init__(name=name, **kwargs)
        self.rows = self.add_variable((), initializer="zeros", name="rows")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.rows.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "float32"))

    def result(self):
        return self.rows


def row_id_data(rows: int) -> tuple:
    """Packed `(x, y)` arrays for the infeed whose `y` is the row index."""
    from tpufit.data import infeed

    x, _ = tiny_data(rows)
    return infeed.pack_arrays(x, np.arange(rows))


def take_numpy(dataset: tf.data.Dataset, count: int) -> list:
    """The first `count` elements of `dataset`, as numpy, read eagerly."""
    return [tf.nest.map_structure(lambda t: t.numpy(), element) for element in dataset.take(count)]


def scalar_events(directory) -> dict[str, dict[int, float]]:
    """Every scalar in the TensorBoard event files of `directory`: tag -> {step: value}."""
    values: dict[str, dict[int, float]] = {}
    for path in tf.io.gfile.glob(str(directory / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def tiny_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`rows` rows of float32 features and int labels for `tiny_model`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=rows)
    return x, y


def compile_args() -> dict:
    """The compile arguments shared by the tests: plain SGD for exact comparisons."""
    return dict(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def compiled(model: keras.Model | None = None, iterations_per_loop: int = 4, **compile_kwargs):
    """A `tpufit.TPUModel` of `model` (default: the tiny model) compiled with `compile_args()`."""
    import tpufit  # After the device set-up above, like every TensorFlow import here.

    tm = tpufit.TPUModel(model or tiny_model(), iterations_per_loop=iterations_per_loop)
    tm.compile(**(compile_kwargs or compile_args()))
    return tm


def copy_model(model: keras.Model) -> keras.Model:
    """A plain Keras twin of `model` with the same weights (built on the default strategy)."""
    with tf.distribute.get_strategy().scope():
        twin = keras.models.clone_model(model)
        twin.set_weights(model.get_weights())
    return twin


def keras_twin(model: keras.Model, **compile_kwargs) -> keras.Model:
    """A plain Keras twin of `model` (same weights), compiled like `compiled()`."""
    twin = copy_model(model)
    twin.compile(**(compile_kwargs or compile_args()))
    return twin


def assert_same_weights(a: keras.Model, b: keras.Model, rtol=1e-5, atol=1e-6) -> None:
    """Asserts two models hold the same weights, to `rtol` / `atol`."""
    for left, right in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(left, right, rtol=rtol, atol=atol)


@dataclasses.dataclass
class Outcome:
    """What one side of a `side_by_side` run gave: `body`'s result, the warnings, the model."""

    result: object
    warnings: list[str]
    model: keras.Model


def side_by_side(
    body: Callable[[keras.Model], object],
    *,
    iterations_per_loop: int = 1,
    steps_per_execution: int = 1,
    make_model: Callable[[], keras.Model] = tiny_model,
) -> tuple[Outcome, Outcome]:
    """Runs `body(model)` as plain Keras code, then on a model routed through `tpufit.attach`.

    Both models start from the same weights (`make_model()` is seeded) and are
    compiled with `compile_args()`; Keras's with `steps_per_execution`, tpufit's
    with `iterations_per_loop`. Returns `(keras, tpufit)` outcomes, each with
    every warning `body` raised.
    """
    import tpufit

    outcomes = []
    for attached in (False, True):
        model = make_model()
        if attached:
            tpufit.attach(model, iterations_per_loop=iterations_per_loop)
            model.compile(**compile_args())
        else:
            model.compile(**compile_args(), steps_per_execution=steps_per_execution)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = body(model)
        outcomes.append(Outcome(result, [str(w.message) for w in caught], model))
    return outcomes[0], outcomes[1]


def assert_close(ours, theirs, rtol=1e-5, atol=1e-6) -> None:
    """Asserts two nested structures (dicts, lists, tuples) of numbers are equal to `rtol`."""
    tf.nest.assert_same_structure(ours, theirs)
    for a, b in zip(tf.nest.flatten(ours), tf.nest.flatten(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def warned(outcome: Outcome, start: str) -> list[str]:
    """The warnings of `outcome` that start with `start`."""
    return [message for message in outcome.warnings if message.startswith(start)]


class OwnStepRegressor(keras.Model):
    """The keras.io "Customizing what happens in fit()" model, recording what its steps see."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mae = keras.metrics.MeanAbsoluteError(name="mae")
        self.seen: list = []

    def _step(self, data, training):
        self.seen.append((type(data).__name__, len(data), int(data[0].shape[0] or -1)))
        x, y = data
        y_pred = self(x, training=training)
        loss = keras.losses.mean_squared_error(y, y_pred)
        return y_pred, loss

    def train_step(self, data):
        with tf.GradientTape() as tape:
            y_pred, loss = self._step(data, True)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=False))
        self.loss_tracker.update_state(loss)
        self.mae.update_state(data[1], y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae.result()}

    def test_step(self, data):
        y_pred, loss = self._step(data, False)
        self.loss_tracker.update_state(loss)
        self.mae.update_state(data[1], y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae]


def own_step_model() -> OwnStepRegressor:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((FEATURES,))
    return OwnStepRegressor(inputs, keras.layers.Dense(1)(inputs))


class TinyGAN(keras.Model):
    """A GAN with its own `compile` (two optimizers) and `train_step`, as on keras.io."""

    def __init__(self):
        super().__init__()
        self.discriminator = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
        self.generator = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(FEATURES),
            ]
        )
        self.d_loss = keras.metrics.Mean(name="d_loss")
        self.g_loss = keras.metrics.Mean(name="g_loss")
        self.seeds = keras.random.SeedGenerator(7)

    @property
    def metrics(self):
        return [self.d_loss, self.g_loss]

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer, self.g_optimizer, self.loss_fn = d_optimizer, g_optimizer, loss_fn

    def call(self, x):
        return self.discriminator(x)

    def train_step(self, data):
        real = data[0] if isinstance(data, tuple) else data
        rows = keras.ops.shape(real)[0]
        fake = self.generator(keras.random.normal((rows, 2), seed=self.seeds))
        labels = keras.ops.concatenate([keras.ops.ones((rows, 1)), keras.ops.zeros((rows, 1))], 0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(
                labels, self.discriminator(keras.ops.concatenate([fake, real], 0))
            )
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights, strict=False))
        with tf.GradientTape() as tape:
            fake = self.generator(keras.random.normal((rows, 2), seed=self.seeds))
            g_loss = self.loss_fn(keras.ops.zeros((rows, 1)), self.discriminator(fake))
        weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights, strict=False))
        self.d_loss.update_state(d_loss)
        self.g_loss.update_state(g_loss)
        return {"d_loss": self.d_loss.result(), "g_loss": self.g_loss.result()}


@pytest.fixture
def model() -> keras.Model:
    """A fresh `tiny_model`."""
    return tiny_model()


def run_pytest_with_replicas(test_file: str, replicas_: int, timeout: int = 600) -> str:
    """Runs `test_file` in a child pytest whose TensorFlow has `replicas_` CPU devices.

    Fails unless the child ran its tests and all passed; returns its summary line.
    """
    env = dict(os.environ, TPUFIT_TEST_REPLICAS=str(replicas_))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / test_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary, summary
    return summary


def check_static_batch(element, batch: int) -> None:
    data, signals = element
    for value in tf.nest.flatten(data) + list(signals.values()):
        assert value.shape[0] == batch


def real_ids(elements: list) -> np.ndarray:
    """Row ids of the mask-1 rows of `(x, y=ids)` batches, in stream order."""
    ids = [data[1][signals["mask"] > 0.5] for data, signals in elements]
    return np.concatenate(ids) if ids else np.zeros([0], np.int64)


def check_rows_match_ids(elements: list, x: np.ndarray) -> None:
    """Every row (real or padding) carries the features of the row its id names."""
    for (bx, by), _ in elements:
        np.testing.assert_array_equal(bx, x[by])


def id_dataset(rows: int, batch: int) -> tf.data.Dataset:
    x, _ = tiny_data(rows)
    return tf.data.Dataset.from_tensor_slices((x, np.arange(rows))).batch(batch)


class Stopper(keras.callbacks.Callback):
    """Sets the model's stop flag `flag` at the `after`-th `event` (a batch end), counting them."""

    def __init__(self, event: str, flag: str, after: int):
        super().__init__()
        self.flag, self.after, self.calls = flag, after, 0
        setattr(self, event, self._batch_end)

    def _batch_end(self, batch, logs=None):
        self.calls += 1
        if self.calls == self.after:
            setattr(self.model, self.flag, True)


class AddIfGiven(keras.layers.Layer):
    """Keras's own test layer for optional inputs: `x + o`, or `x` alone when `o` is None."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)

    def call(self, x, o=None):
        return self.dense(x if o is None else x + o)


def optional_input_model() -> keras.Model:
    """A model of inputs `x` and an optional `o` (Keras's own optional-input test case)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((2,), name="x")
    o = keras.Input((2,), name="o", optional=True)
    return keras.Model({"x": x, "o": o}, AddIfGiven()(x, o))
