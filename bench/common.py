"""Pieces the benchmarks share: the model, the data, the contenders' timing.

Every benchmark compares contenders that train the same model from the same
initial weights on the same data. A contender is a function ``run(n)`` that
trains ``n`` steps and returns a `Timing`; `measure` warms each one up once
(tracing and XLA compiles are excluded), then times the repeats round-robin so
that a noisy machine slows every contender alike.

As ``timeit`` does, Python's garbage collector is paused during each timed run
(and run, untimed, before it): a full collection over TensorFlow's object
graph takes about a second here, and which contender's run it lands in is luck.
"""

import contextlib
import ctypes
import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import keras
import numpy as np
import tensorflow as tf

MLP_SIZES = (784, 256, 256, 10)


def build_mlp(sizes: Sequence[int] = MLP_SIZES, seed: int = 0) -> keras.Model:
    """A relu MLP ending in logits; the same seed gives the same weights."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((sizes[0],))]
    layers += [keras.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
    layers.append(keras.layers.Dense(sizes[-1]))
    return keras.Sequential(layers)


def fresh_model(initial_weights: list, sizes: Sequence[int] = MLP_SIZES):
    """A new model object holding ``initial_weights``."""
    model = build_mlp(sizes)
    model.set_weights(initial_weights)
    return model


def compile_kwargs(learning_rate: float = 1e-3) -> dict:
    """Optimizer and loss for a classifier on logits (a new optimizer per call)."""
    return {
        "optimizer": keras.optimizers.Adam(learning_rate),
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    }


def synthetic_classification(
    n_rows: int, n_features: int, n_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Normal float32 features and uniform int32 labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    y = rng.integers(0, n_classes, size=n_rows, dtype=np.int32)
    return x, y


def cached_dataset(x, y, batch_size: int) -> tf.data.Dataset:
    """Static-shape batches held in memory and repeated forever."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds.batch(batch_size, drop_remainder=True).cache().repeat()


@dataclass
class Timing:
    """One timed run: wall seconds, steps the optimizer took, how it was timed.

    ``cpu_seconds`` is the process's CPU time over the same span (all threads):
    on a machine shared with other work it moves less than wall time does.
    ``stats`` holds tpufit's ``last_run_stats`` of the run, when it has one.
    """

    seconds: float
    steps: int
    how: str
    stats: object = None
    cpu_seconds: float = 0.0

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / self.steps

    @property
    def cpu_ms_per_step(self) -> float:
        return 1000.0 * self.cpu_seconds / self.steps


class SpanTimer(keras.callbacks.Callback):
    """Times a ``fit`` from ``on_train_begin`` to ``on_train_end``.

    This leaves out ``fit``'s set-up and tear-down; the latter sometimes adds
    seconds on a repeated dataset (see shared/reference/keras3_trainer.md, 5c).
    ``count`` returns the steps trained so far; reading it also waits for the
    device to finish.
    """

    def __init__(self, count: Callable[[], int]):
        super().__init__()
        self._count = count
        self.timing: Timing | None = None

    def on_train_begin(self, logs=None):
        self._steps0 = self._count()
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()

    def on_train_end(self, logs=None):
        steps = self._count() - self._steps0
        self.timing = Timing(
            time.perf_counter() - self._t0,
            steps,
            "callback span",
            cpu_seconds=time.process_time() - self._cpu0,
        )


def time_call(fn: Callable[[], object], count: Callable[[], int], how: str) -> Timing:
    """Times ``fn()`` from the host; ``count`` syncs with the device after it."""
    steps0 = count()
    t0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    steps = count() - steps0
    return Timing(time.perf_counter() - t0, steps, how, cpu_seconds=time.process_time() - cpu0)


@dataclass
class Result:
    """All timed runs of one contender."""

    name: str
    timings: list[Timing] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(t.ms_per_step for t in self.timings)

    @property
    def median_cpu_ms(self) -> float:
        return statistics.median(t.cpu_ms_per_step for t in self.timings)

    @property
    def min_ms(self) -> float:
        return min(t.ms_per_step for t in self.timings)

    @property
    def how(self) -> str:
        return ", ".join(sorted({t.how for t in self.timings}))


@contextlib.contextmanager
def gc_paused():
    """Collects garbage, then keeps the collector off for the block."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def measure(
    contenders: dict[str, Callable[[int], Timing]],
    steps: int,
    warmup_steps: int,
    repeats: int,
    log: Callable[[str], None] = print,
) -> dict[str, Result]:
    """Warms up every contender once, then times ``repeats`` rounds of ``steps``.

    Raises:
        RuntimeError: a contender trained another number of steps than asked.
    """
    results = {name: Result(name) for name in contenders}
    for name, run in contenders.items():
        log(f"warm-up  {name} ({warmup_steps} steps)")
        _check_steps(name, run(warmup_steps), warmup_steps)
    for r in range(repeats):
        for name, run in contenders.items():
            with gc_paused():
                timing = run(steps)
            timing = _check_steps(name, timing, steps)
            results[name].timings.append(timing)
            log(f"run {r + 1}/{repeats} {name}: {timing.ms_per_step:.3f} ms/step")
    return results


def _check_steps(name: str, timing: Timing, expected: int) -> Timing:
    if timing.steps != expected:
        raise RuntimeError(
            f"{name} trained {timing.steps} steps where {expected} were asked; "
            "its ms/step would not be comparable"
        )
    return timing


def time_calls(
    calls: dict[str, Callable[[], object]], repeats: int, log: Callable[[str], None] = print
) -> dict[str, Result]:
    """Warms up every call once, then times ``repeats`` rounds of them, round-robin.

    Returns each call's timings, one step per call.
    """
    for name, call in calls.items():
        log(f"warm-up  {name}")
        call()
    results = {name: Result(name) for name in calls}
    for r in range(repeats):
        for name, call in calls.items():
            with gc_paused():
                timing = time_call(call, lambda: 0, "host wall")
            timing.steps = 1
            results[name].timings.append(timing)
            log(f"run {r + 1}/{repeats} {name}: {timing.seconds:.4f} s")
    return results


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rss_growth(call: Callable[[], object]) -> tuple[int, object]:
    """Runs ``call()`` and returns (peak resident memory above the start, in bytes, its result).

    Linux only: writing 5 to /proc/self/clear_refs resets the process's peak
    RSS (VmHWM), which is then read back after the call. Free heap memory that
    earlier calls left resident is first given back to the system
    (``malloc_trim``), else the call could reuse it unseen.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    start = _status_bytes("VmRSS")
    result = call()
    # The kernel updates the peak lazily; it is never below the start.
    return max(_status_bytes("VmHWM") - start, 0), result


def model_bytes(model: keras.Model) -> int:
    """Bytes of a model's weights."""
    return sum(np.asarray(w).nbytes for w in model.get_weights())


def environment() -> str:
    """TensorFlow and Keras versions and the devices, for the report header."""
    devices = ", ".join(sorted({d.device_type for d in tf.config.list_logical_devices()}))
    return (
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPU cores, devices: {devices}"
    )
