"""Training throughput: tpufit against Keras's own fit and a hand-written limit.

The 784-256-256-10 MLP (Adam, logits, batch 128) on synthetic data, all
contenders in one process, each from the same initial weights:

- Keras ``model.fit`` with ``steps_per_execution`` 1 and LOOP, ``jit_compile``
  False and True, on a cached, repeated ``tf.data`` dataset;
- tpufit ``TPUModel(model, iterations_per_loop=LOOP).fit(...)`` on the same
  dataset (the ratios compare these rows);
- both again on shuffled numpy arrays (each side's own array infeed), Keras at
  ``steps_per_execution=LOOP`` with XLA;
- the limit: one ``tf.function`` that runs LOOP steps of a hand-written,
  XLA-compiled train step over a cached ``tf.data`` iterator;
- for information, a stricter limit: the whole LOOP-step loop as one XLA
  program over batches held in a tensor (no ``tf.data`` between steps).

Each contender runs once to warm up (traces and compiles, not timed), then
REPEATS times STEPS steps, round-robin; the table gives the median ms/step.
A ``fit`` is timed from its ``on_train_begin`` to its ``on_train_end`` callback,
a limit around its loop calls. Speed ratios are other ms / tpufit ms: above 1
means tpufit is faster. Nothing here asserts a time; ``--smoke`` only checks
that every contender runs and trains exactly the steps asked.

    python bench/throughput.py            # 2,000 steps, loops of 100, 3 repeats
    python bench/throughput.py --smoke    # 50 steps, loops of 10, 1 repeat
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.*

import tensorflow as tf

from bench.common import (
    MLP_SIZES,
    SpanTimer,
    Timing,
    build_mlp,
    cached_dataset,
    compile_kwargs,
    environment,
    fresh_model,
    measure,
    synthetic_classification,
    time_call,
)

BATCH = 128
N_BATCHES = 16  # distinct batches of synthetic data, cycled
ALL_CONTENDERS = ("keras", "tpufit", "limit", "xla-loop")


NUMPY_EPOCH = 100  # steps in one pass over the numpy arrays


def _fit_inputs(data, n: int) -> dict:
    """`fit` arguments for n steps of `data`: a cached dataset, or `(x, y)` arrays.

    Arrays are passed whole, shuffled, for n / NUMPY_EPOCH epochs: Keras stops
    when arrays run out, so both sides run whole passes.
    """
    if isinstance(data, tf.data.Dataset):
        return {"x": data, "steps_per_epoch": n, "shuffle": False}
    x, y = data
    return {"x": x, "y": y, "batch_size": BATCH, "shuffle": True, "epochs": n // NUMPY_EPOCH}


def keras_contender(initial_weights, data, spe: int, jit: bool):
    model = fresh_model(initial_weights)
    model.compile(**compile_kwargs(), steps_per_execution=spe, jit_compile=jit)

    def run(n: int) -> Timing:
        timer = SpanTimer(lambda: int(model.optimizer.iterations))
        model.fit(**{"epochs": 1, **_fit_inputs(data, n)}, verbose=0, callbacks=[timer])
        return timer.timing

    return run


def tpufit_contender(initial_weights, data, loop: int):
    import tpufit

    model = fresh_model(initial_weights)
    tm = tpufit.TPUModel(model, iterations_per_loop=loop)
    tm.compile(**compile_kwargs())

    def count() -> int:
        return int(tm.global_step)

    def run(n: int) -> Timing:
        timer = SpanTimer(count)

        def fit():
            tm.fit(**{"epochs": 1, **_fit_inputs(data, n)}, verbose=0, callbacks=[timer])

        wall = time_call(fit, count, "fit() wall")
        # The same span as for Keras when fit() runs the callback, else all of it.
        return timer.timing or wall

    return run


def limit_contender(initial_weights, ds, loop: int):
    """What one tf.function over an XLA step does, with nothing else around it."""
    model = fresh_model(initial_weights)
    kwargs = compile_kwargs()
    optimizer, loss_fn = kwargs["optimizer"], kwargs["loss"]
    variables = model.trainable_variables
    optimizer.build(variables)
    iterator = iter(ds)

    @tf.function(jit_compile=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    @tf.function
    def train_loop(n):  # n is a tensor: a shorter last loop does not retrace
        loss = tf.constant(0.0)
        for _ in tf.range(n):
            x, y = next(iterator)
            loss = train_step(x, y)
        return loss

    return _looped_runner(train_loop, loop, optimizer)


def xla_loop_contender(initial_weights, x, y, loop: int):
    """The whole loop as one XLA program, batches taken from a tensor."""
    model = fresh_model(initial_weights)
    kwargs = compile_kwargs()
    optimizer, loss_fn = kwargs["optimizer"], kwargs["loss"]
    variables = model.trainable_variables
    optimizer.build(variables)
    n_batches = len(x) // BATCH
    xs = tf.constant(x[: n_batches * BATCH].reshape(n_batches, BATCH, -1))
    ys = tf.constant(y[: n_batches * BATCH].reshape(n_batches, BATCH))
    step0 = tf.Variable(0, dtype=tf.int32)  # where the next loop starts reading

    @tf.function(jit_compile=True)
    def train_loop(n):
        def body(i, loss):
            b = (step0 + i) % n_batches
            # tf.gather, not xs[b]: XLA recompiled the slice for every b.
            xb, yb = tf.gather(xs, b), tf.gather(ys, b)
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return i + 1, loss

        _, loss = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)))
        step0.assign((step0 + n) % n_batches)
        return loss

    return _looped_runner(train_loop, loop, optimizer)


def _looped_runner(train_loop, loop: int, optimizer):
    """Runs n steps as calls of ``loop`` steps (the last one shorter)."""

    def run(n: int) -> Timing:
        def loops():
            sizes = [loop] * (n // loop) + ([n % loop] if n % loop else [])
            for size in sizes:
                loss = train_loop(tf.constant(size))
            loss.numpy()

        return time_call(loops, lambda: int(optimizer.iterations), "host wall")

    return run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="steps per timed run")
    p.add_argument(
        "--loop",
        type=int,
        default=100,
        help="steps_per_execution / iterations_per_loop / limit loop",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs each")
    p.add_argument(
        "--contenders",
        default=",".join(ALL_CONTENDERS),
        help="comma-separated subset of: " + ", ".join(ALL_CONTENDERS),
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="50 steps, loops of 10, 1 repeat: checks that all runs",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.loop, args.repeats = 50, 10, 1
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(args.contenders) - set(ALL_CONTENDERS)
    if unknown:
        p.error(f"unknown contenders {sorted(unknown)}; pick from {ALL_CONTENDERS}")
    for name in ("steps", "loop", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    x, y = synthetic_classification(BATCH * N_BATCHES, MLP_SIZES[0], MLP_SIZES[-1])
    ds = cached_dataset(x, y, BATCH)
    initial_weights = build_mlp().get_weights()

    # Same input for both sides of a ratio: the cached tf.data pipeline (what the
    # limit reads) and, separately, shuffled numpy arrays (each side's own infeed).
    contenders = {}
    if "keras" in args.contenders:
        for spe in dict.fromkeys((1, args.loop)):
            for jit in (False, True):
                contenders[f"keras fit spe={spe} jit={jit}"] = keras_contender(
                    initial_weights, ds, spe, jit
                )
    if "tpufit" in args.contenders:
        contenders[f"tpufit ipl={args.loop}"] = tpufit_contender(initial_weights, ds, args.loop)
    warmup = min(args.steps, 2 * args.loop)
    if args.steps % NUMPY_EPOCH == 0 and warmup % NUMPY_EPOCH == 0:
        arrays = synthetic_classification(BATCH * NUMPY_EPOCH, MLP_SIZES[0], MLP_SIZES[-1])
        if "keras" in args.contenders:
            contenders[f"numpy: keras fit spe={args.loop} jit=True"] = keras_contender(
                initial_weights, arrays, args.loop, True
            )
        if "tpufit" in args.contenders:
            contenders[f"numpy: tpufit ipl={args.loop}"] = tpufit_contender(
                initial_weights, arrays, args.loop
            )
    if "limit" in args.contenders:
        contenders[f"limit tf.function loop={args.loop}"] = limit_contender(
            initial_weights, ds, args.loop
        )
    if "xla-loop" in args.contenders:
        contenders[f"limit XLA loop={args.loop} (info)"] = xla_loop_contender(
            initial_weights, x, y, args.loop
        )

    sizes = "-".join(map(str, MLP_SIZES))
    print(
        f"MLP {sizes}, Adam, batch {BATCH}, {args.steps} steps, "
        f"median of {args.repeats}; {environment()}"
    )
    results = measure(contenders, args.steps, warmup, args.repeats)
    report(results)
    return 0


def report(results) -> None:
    tpufit_ms = next(
        (r.median_ms for name, r in results.items() if name.startswith("tpufit ")),
        None,
    )
    header = f"{'contender':<34}{'ms/step':>9}{'min':>9}  {'tpufit speed':>12}  timed by"
    print()
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        speed = f"{r.median_ms / tpufit_ms:.2f}x" if tpufit_ms else "-"
        print(f"{name:<34}{r.median_ms:>9.3f}{r.min_ms:>9.3f}  {speed:>12}  {r.how}")
    if tpufit_ms is None:
        return

    def best(prefix: str):
        rs = [r for name, r in results.items() if name.startswith(prefix)]
        return min(rs, key=lambda r: r.median_ms) if rs else None

    comparisons = [
        (label, r, target)
        for label, r, target in (
            ("tpufit / Keras spe=1", best("keras fit spe=1 "), None),
            ("tpufit / Keras best", best("keras"), 1.0),
            ("tpufit / limit", best("limit tf.function"), 1 / 1.1),
            ("tpufit / XLA loop", best("limit XLA"), None),
        )
        if r is not None
    ]
    numpy_tpufit, numpy_keras = best("numpy: tpufit"), best("numpy: keras")
    if comparisons:
        print("\nspeed ratios (other ms / tpufit ms; above 1: tpufit faster)")
    for label, r, target in comparisons:
        ratio = r.median_ms / tpufit_ms
        goal = ""
        if target is not None:
            met = "met" if ratio >= target else "NOT met"
            goal = f"  (target >= {target:.2f}: {met})"
        print(f"  {label:<22}{ratio:>6.2f}x  [{r.name}]{goal}")
    if numpy_tpufit and numpy_keras:
        ratio = numpy_keras.median_ms / numpy_tpufit.median_ms
        print(f"  {'numpy: tpufit / Keras':<22}{ratio:>6.2f}x  [{numpy_keras.name}]")


if __name__ == "__main__":
    sys.exit(main())
