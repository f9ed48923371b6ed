"""Prediction and evaluation: tpufit against Keras's own predict/evaluate and the limit.

The 784-256-256-10 MLP, the same weights everywhere, in one process:

- predict-large: predict on 200,001 rows at batch 1,000 (throughput; the
  padded last batch included), and the peak resident memory (RSS) the call
  adds, against a budget of 1.5x its output array plus the model's weights;
- predict-10: predict on 10 rows, the fixed cost of one call (building the
  input, setting up and tearing down a run);
- evaluate: loss and accuracy on 100,001 rows at batch 1,000.

Keras runs at ``steps_per_execution`` 1 and 100, with and without XLA; the
limit is one ``tf.function`` running the same steps (an XLA-compiled model
call per batch) over the data held in a tensor. Each contender runs once to
warm up (traces and compiles excluded), then REPEATS times, round-robin; the
figure is the median. Every contender's result is checked against tpufit's.
Nothing here asserts a time.

    python bench/inference.py             # all three cases, 3 repeats
    python bench/inference.py --smoke     # small sizes, 1 repeat
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.*

import keras
import numpy as np
import tensorflow as tf

from bench.common import (
    MLP_SIZES,
    build_mlp,
    compile_kwargs,
    environment,
    model_bytes,
    peak_rss_growth,
    time_calls,
)
from bench.report import CaseResult, table

BATCH = 1000
KERAS_SETTINGS = [(spe, jit) for spe in (1, 100) for jit in (False, True)]


def _models(settings, metrics=None, sizes=MLP_SIZES):
    """A tpufit model and one Keras model per (spe, jit), all with the same weights."""
    import tpufit

    weights = build_mlp(sizes).get_weights()
    kwargs = {"metrics": metrics} if metrics else {}
    keras_models = {}
    for spe, jit in settings:
        model = build_mlp(sizes)
        model.set_weights(weights)
        model.compile(**compile_kwargs(), steps_per_execution=spe, jit_compile=jit, **kwargs)
        keras_models[f"keras spe={spe} jit={jit}"] = model
    model = build_mlp(sizes)
    model.set_weights(weights)
    tm = tpufit.TPUModel(model)
    tm.compile(**compile_kwargs(), **kwargs)
    return tm, keras_models


def _resident_batches(x: np.ndarray):
    """``x`` as full batches held in one tensor, and the rows left over."""
    full = len(x) // BATCH
    return tf.constant(x[: full * BATCH].reshape(full, BATCH, -1)), tf.constant(x[full * BATCH :])


def _limit_predict(model: keras.Model, x: np.ndarray):
    batches, rest = _resident_batches(x)
    call = tf.function(lambda b: model(b, training=False), jit_compile=True)

    @tf.function
    def predict_all():
        outputs = tf.TensorArray(tf.float32, size=batches.shape[0])
        for i in tf.range(batches.shape[0]):
            outputs = outputs.write(i, call(tf.gather(batches, i)))
        return tf.reshape(outputs.stack(), (-1, MLP_SIZES[-1]))

    def run():
        head = predict_all().numpy()
        return np.concatenate([head, call(rest).numpy()]) if rest.shape[0] else head

    return run


def _check_same(name: str, expected, got, atol: float) -> None:
    if isinstance(expected, dict):
        same = all(np.isclose(expected[k], got[k], rtol=1e-4, atol=atol) for k in expected)
    else:
        same = expected.shape == got.shape and np.allclose(expected, got, atol=atol)
    if not same:
        raise RuntimeError(f"{name} does not return what tpufit returns")


def _time(calls: dict, repeats: int, reference: str, atol: float) -> tuple[dict, dict]:
    """Median seconds per call and CPU seconds per call, after checking the results agree."""
    outputs = {name: call() for name, call in calls.items()}
    for name, output in outputs.items():
        _check_same(name, outputs[reference], output, atol)
    del outputs
    results = time_calls(calls, repeats)
    return (
        {name: r.median_ms / 1000 for name, r in results.items()},
        {name: r.median_cpu_ms / 1000 for name, r in results.items()},
    )


def _case(name, description, calls, repeats, atol, target, notes_from=None) -> CaseResult:
    """Times ``calls`` (tpufit's first) and makes the case's result against Keras's best."""
    costs, cpu = _time(calls, repeats, "tpufit auto", atol)
    notes = [notes_from.last_run_stats.summary()] if notes_from is not None else []
    result = CaseResult(
        name, description, "s/call", costs, "tpufit auto", [("keras best", target)], notes
    )
    result.cpu = cpu
    return result


def _calls(tpufit_call, keras_models, keras_call, limit) -> dict:
    """tpufit's call, then each Keras model's, then the limit's."""
    calls = {"tpufit auto": tpufit_call}
    for name, model in keras_models.items():
        calls[name] = lambda m=model: keras_call(m)
    calls[next(iter(limit))] = next(iter(limit.values()))
    return calls


def predict_large(smoke: bool, repeats: int) -> list[CaseResult]:
    rows = 2_001 if smoke else 200_001
    x = np.random.default_rng(0).standard_normal((rows, MLP_SIZES[0]), dtype=np.float32)
    tm, keras_models = _models(KERAS_SETTINGS)
    calls = _calls(
        lambda: tm.predict(x, batch_size=BATCH, verbose=0),
        keras_models,
        lambda m: m.predict(x, batch_size=BATCH, verbose=0),
        {"limit resident loop": _limit_predict(tm.model, x)},
    )
    description = f"predict {rows:,} rows, batch {BATCH:,}"
    speed = _case("predict-large", description, calls, repeats, 1e-4, 1.0, tm)

    output_mb = rows * MLP_SIZES[-1] * 4 / 1e6
    model_mb = model_bytes(tm.model) / 1e6
    peaks = {}
    for name in ("tpufit auto", min(keras_models, key=speed.costs.get)):
        growth, _ = peak_rss_growth(calls[name])
        peaks[name] = growth / 1e6
    peaks["limit budget"] = 1.5 * output_mb + model_mb
    memory = CaseResult(
        "predict-large RSS",
        f"peak RSS growth of one predict call; output {output_mb:.1f} MB, model "
        f"{model_mb:.1f} MB, budget 1.5x output + model",
        "MB",
        peaks,
        "tpufit auto",
        [("limit", 1.0)],
    )
    return [speed, memory]


def predict_small(smoke: bool, repeats: int) -> list[CaseResult]:
    x = np.random.default_rng(1).standard_normal((10, MLP_SIZES[0]), dtype=np.float32)
    tm, keras_models = _models([(1, False), (1, True)])
    resident = tf.constant(x)
    call = tf.function(lambda b: tm.model(b, training=False), jit_compile=True)
    calls = _calls(
        lambda: tm.predict(x, verbose=0),
        keras_models,
        lambda m: m.predict(x, verbose=0),
        {"limit one call": lambda: call(resident).numpy()},
    )
    description = "predict on 10 rows: the fixed cost of one call"
    # Fixed cost at most half of Keras's: Keras's cost / tpufit's at least 2.
    return [_case("predict-10", description, calls, max(repeats, 3 if smoke else 15), 1e-4, 2.0)]


def _limit_evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray):
    batches, rest = _resident_batches(x)
    labels = tf.constant(y[: batches.shape[0] * BATCH].reshape(batches.shape[0], BATCH))
    rest_labels = tf.constant(y[batches.shape[0] * BATCH :])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

    @tf.function(jit_compile=True)
    def sums(xb, yb):
        logits = model(xb, training=False)
        hits = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32) == yb, tf.float32)
        return tf.stack([loss_fn(yb, logits), tf.reduce_sum(hits)])

    @tf.function
    def evaluate_all():
        total = sums(rest, rest_labels)
        for i in tf.range(batches.shape[0]):
            total += sums(tf.gather(batches, i), tf.gather(labels, i))
        return total / len(x)

    def run():
        loss, accuracy = evaluate_all().numpy()
        return {"loss": float(loss), "accuracy": float(accuracy)}

    return run


def evaluate(smoke: bool, repeats: int) -> list[CaseResult]:
    rows = 1_001 if smoke else 100_001
    rng = np.random.default_rng(2)
    x = rng.standard_normal((rows, MLP_SIZES[0]), dtype=np.float32)
    y = rng.integers(0, MLP_SIZES[-1], size=rows, dtype=np.int32)
    tm, keras_models = _models(KERAS_SETTINGS, metrics=["accuracy"])
    kwargs = {"batch_size": BATCH, "verbose": 0, "return_dict": True}
    calls = _calls(
        lambda: tm.evaluate(x, y, **kwargs),
        keras_models,
        lambda m: m.evaluate(x, y, **kwargs),
        {"limit resident loop": _limit_evaluate(tm.model, x, y)},
    )
    description = f"evaluate loss and accuracy on {rows:,} rows, batch {BATCH:,}"
    return [_case("evaluate", description, calls, repeats, 1e-5, 1.0, tm)]


CASES = {"predict-large": predict_large, "predict-10": predict_small, "evaluate": evaluate}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="small sizes, 1 repeat")
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    results = [r for case in CASES.values() for r in case(args.smoke, repeats)]
    print(f"\n{environment()}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
