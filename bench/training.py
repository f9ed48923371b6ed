"""The suite's training cases: train-small, train-conv and train-input-bound.

Each case trains the same model from the same initial weights on the same
data with every contender of ``bench/throughput.py`` (Keras ``fit`` at
``steps_per_execution`` 1 and at larger values, with and without XLA; tpufit
with ``iterations_per_loop="auto"``; the hand-written limits), warm-up
excluded, median of the repeats, and returns a `bench.report.CaseResult`.

- train-small: the 784-256-256-10 MLP at batch 128 on a cached ``tf.data``
  dataset (host overhead dominates);
- train-conv: a small CNN on 28x28x1 images at batch 64 (compute dominates);
- train-input-bound: the MLP fed by a ``tf.data`` pipeline whose per-row
  ``map`` is costly and sequential; the limit is that pipeline's own rate,
  read alone in a ``tf.function`` loop with no training.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bench import throughput
from bench.common import (
    MLP_SIZES,
    Timing,
    build_mlp,
    cached_dataset,
    measure,
    synthetic_classification,
    time_call,
)
from bench.report import CaseResult

CONV_SHAPE = (28, 28, 1)


def build_cnn(seed: int = 0) -> keras.Model:
    """A small CNN on 28x28x1 images ending in 10 logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(CONV_SHAPE),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def _maker(build):
    weights = build().get_weights()

    def make_model():
        model = build()
        model.set_weights(weights)
        return model

    return make_model


def _middle_spe(steps: int) -> int:
    """The largest divisor of ``steps`` up to 100.

    Keras runs whole executions even past ``steps_per_epoch`` on an endless
    dataset, so only a divisor trains exactly ``steps`` steps.
    """
    return max(d for d in range(1, min(steps, 100) + 1) if steps % d == 0)


def _keras_settings(steps: int) -> list[tuple[int, bool]]:
    """(steps_per_execution, jit_compile): 1 and the whole run with and without XLA, about 100."""
    settings = [(1, False), (1, True), (_middle_spe(steps), True), (steps, False), (steps, True)]
    return list(dict.fromkeys(settings))


def _train_contenders(make_model, ds, x, y, batch, steps):
    contenders = {}
    for spe, jit in _keras_settings(steps):
        contenders[f"keras spe={spe} jit={jit}"] = throughput.keras_contender(
            make_model, ds, spe, jit
        )
    contenders["tpufit auto"] = throughput.tpufit_contender(make_model, ds, "auto")
    loop = min(steps, 1000)
    contenders["limit tf.data loop, XLA step"] = throughput.limit_contender(make_model, ds, loop)
    for jit in (True, False):
        contenders[f"limit resident loop, {'XLA' if jit else 'plain'} step"] = (
            throughput.resident_contender(
                make_model, x, y, batch, loop, whole_loop_xla=False, jit=jit
            )
        )
    contenders["limit resident loop, all XLA"] = throughput.resident_contender(
        make_model, x, y, batch, loop, whole_loop_xla=True
    )
    return contenders


def _train_result(name, description, results, targets) -> CaseResult:
    ms = {contender: r.median_ms for contender, r in results.items()}
    tpufit_run = results["tpufit auto"].timings[-1]
    notes = [tpufit_run.stats.summary()] if tpufit_run.stats is not None else []
    result = CaseResult(name, description, "ms/step", ms, "tpufit auto", targets, notes)
    result.cpu = {contender: r.median_cpu_ms for contender, r in results.items()}
    return result


def train_small(smoke: bool, repeats: int) -> CaseResult:
    batch, steps = 128, (40 if smoke else 600)
    x, y = synthetic_classification(batch * 16, MLP_SIZES[0], MLP_SIZES[-1])
    ds = cached_dataset(x, y, batch)
    contenders = _train_contenders(_maker(build_mlp), ds, x, y, batch, steps)
    results = measure(contenders, steps, steps, repeats)
    targets = [
        ("keras spe=1", 1.3),
        ("keras best", 1.0),
        ("limit", 0.95),
    ]
    description = f"MLP {'-'.join(map(str, MLP_SIZES))}, batch {batch}, {steps} steps"
    return _train_result("train-small", description, results, targets)


def train_conv(smoke: bool, repeats: int) -> CaseResult:
    batch, steps = 64, (10 if smoke else 60)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * 8, *CONV_SHAPE), dtype=np.float32)
    y = rng.integers(0, 10, size=len(x), dtype=np.int32)
    ds = cached_dataset(x, y, batch)
    contenders = _train_contenders(_maker(build_cnn), ds, x, y, batch, steps)
    results = measure(contenders, steps, steps, repeats)
    description = f"CNN conv32-conv64-dense128 on 28x28x1, batch {batch}, {steps} steps"
    return _train_result("train-conv", description, results, [("limit", 0.97)])


def costly_pipeline(x, y, batch: int, work: int) -> tf.data.Dataset:
    """Rows through a sequential ``map`` doing ``work`` rounds of elementwise math, then batched.

    No ``num_parallel_calls``, no ``cache``: one CPU core makes the batches,
    the common way a pipeline ends up slower than the model.
    """

    def augment(row, label):
        for _ in range(work):
            row = tf.math.sin(row) * 0.9 + tf.math.cos(row) * 0.1
        return row, label

    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().map(augment)
    options = tf.data.Options()
    # One core for the input (its ops not spread over both): the pipeline alone
    # then leaves the other core to the training step, so the case measures how
    # well the step overlaps the input, not how two cores are shared.
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return ds.batch(batch, drop_remainder=True).with_options(options)


def pipeline_alone(ds: tf.data.Dataset):
    """A contender that only reads ``ds``: the pipeline's own rate, nothing trained."""
    iterator = iter(ds)
    count = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def read(n):
        for _ in tf.range(n):
            batch = next(iterator)
            with tf.control_dependencies(tf.nest.flatten(batch)):
                count.assign_add(1)

    def run(n: int) -> Timing:
        return time_call(lambda: read(tf.constant(n)), lambda: int(count), "host wall")

    return run


def train_input_bound(smoke: bool, repeats: int) -> CaseResult:
    batch, steps, work = 128, (10 if smoke else 200), 8
    x, y = synthetic_classification(batch * 16, MLP_SIZES[0], MLP_SIZES[-1])
    ds = costly_pipeline(x, y, batch, work)
    make_model = _maker(build_mlp)
    spe = _middle_spe(steps)
    contenders = {
        "keras spe=1 jit=True": throughput.keras_contender(make_model, ds, 1, True),
        f"keras spe={spe} jit=True": throughput.keras_contender(make_model, ds, spe, True),
        "tpufit auto": throughput.tpufit_contender(make_model, ds, "auto"),
        "limit pipeline alone": pipeline_alone(ds),
    }
    results = measure(contenders, steps, steps, repeats)
    description = (
        f"MLP, batch {batch}, {steps} steps, fed by a sequential map ({work} rounds of "
        "sin/cos per row); limit: the pipeline read alone"
    )
    return _train_result("train-input-bound", description, results, [("limit", 0.95)])
