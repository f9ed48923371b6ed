"""Training throughput: tpufit against Keras's own fit and a hand-written limit.

The 784-256-256-10 MLP (Adam, logits, batch 128) on synthetic data, all
contenders in one process, each from the same initial weights:

- Keras ``model.fit`` with ``steps_per_execution`` 1 and LOOP, ``jit_compile``
  False and True, on a cached, repeated ``tf.data`` dataset;
- tpufit ``TPUModel(model, iterations_per_loop=LOOP).fit(...)`` on the same
  dataset (the ratios compare these rows);
- both again on shuffled numpy arrays (each side's own array infeed), Keras at
  ``steps_per_execution=LOOP`` with XLA;
- limits, hand-written: one ``tf.function`` that runs LOOP steps of an
  XLA-compiled train step over a cached ``tf.data`` iterator; the same over
  batches held in a tensor (device-resident data, no ``tf.data``); and the
  whole LOOP-step loop as one XLA program over that tensor.

The contenders take a ``make_model`` (a fresh model holding the shared initial
weights), so ``bench/training.py`` runs them on other models too.

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
ALL_CONTENDERS = ("keras", "tpufit", "limit", "resident", "xla-loop")


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


def keras_contender(make_model, data, spe: int, jit: bool):
    model = make_model()
    model.compile(**compile_kwargs(), steps_per_execution=spe, jit_compile=jit)
    return keras_runner(model, data)


def keras_runner(model, data, callbacks=()):
    """A contender fitting a compiled Keras ``model`` on ``data``, with ``callbacks`` too."""

    def run(n: int) -> Timing:
        timer = SpanTimer(lambda: int(model.optimizer.iterations.numpy()))
        fit_args = {"epochs": 1, **_fit_inputs(data, n)}
        model.fit(**fit_args, verbose=0, callbacks=[*callbacks, timer])
        return timer.timing

    return run


def tpufit_contender(make_model, data, loop: int | str):
    import tpufit

    tm = tpufit.TPUModel(make_model(), iterations_per_loop=loop)
    tm.compile(**compile_kwargs())
    return tpufit_runner(tm, data)


def tpufit_runner(tm, data, hooks=(), callbacks=()):
    """A contender fitting a compiled `tpufit.TPUModel` on ``data``, with hooks and callbacks."""

    def count() -> int:
        return int(tm.global_step)

    def run(n: int) -> Timing:
        timer = SpanTimer(count)

        def fit():
            fit_args = {"epochs": 1, **_fit_inputs(data, n)}
            tm.fit(**fit_args, verbose=0, callbacks=[*callbacks, timer], hooks=list(hooks))

        wall = time_call(fit, count, "fit() wall")
        # The same span as for Keras when fit() runs the callback, else all of it.
        timing = timer.timing or wall
        timing.stats = tm.last_run_stats
        return timing

    return run


def _hand_written_step(make_model):
    """A model's plain train step (Adam, logits), and its optimizer."""
    model = make_model()
    kwargs = compile_kwargs()
    optimizer, loss_fn = kwargs["optimizer"], kwargs["loss"]
    variables = model.trainable_variables
    optimizer.build(variables)

    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return train_step, optimizer


def limit_contender(make_model, ds, loop: int, jit: bool = True):
    """What one tf.function over a step (XLA or not) and a tf.data iterator does, nothing else."""
    train_step, optimizer = _hand_written_step(make_model)
    train_step = tf.function(train_step, jit_compile=jit)
    iterator = iter(ds)

    @tf.function
    def train_loop(n):  # n is a tensor: a shorter last loop does not retrace
        loss = tf.constant(0.0)
        for _ in tf.range(n):
            x, y = next(iterator)
            loss = train_step(x, y)
        return loss

    return _looped_runner(train_loop, loop, optimizer)


def resident_contender(
    make_model, x, y, batch: int, loop: int, *, whole_loop_xla: bool, jit: bool = True
):
    """One tf.function over batches held in a tensor (device-resident data).

    With ``whole_loop_xla`` the whole loop is one XLA program; else the loop
    is a plain ``tf.function`` calling a step, XLA-compiled if ``jit``, like
    tpufit's and Keras's.
    """
    train_step, optimizer = _hand_written_step(make_model)
    n_batches = len(x) // batch
    xs = tf.constant(x[: n_batches * batch].reshape(n_batches, batch, *x.shape[1:]))
    ys = tf.constant(y[: n_batches * batch].reshape(n_batches, batch, *y.shape[1:]))
    step0 = tf.Variable(0, dtype=tf.int32)  # where the next loop starts reading

    def batch_at(i):
        b = (step0 + i) % n_batches
        # tf.gather, not xs[b]: XLA recompiled the slice for every b.
        return tf.gather(xs, b), tf.gather(ys, b)

    if whole_loop_xla:

        @tf.function(jit_compile=True)
        def train_loop(n):
            def body(i, loss):
                return i + 1, train_step(*batch_at(i))

            _, loss = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)))
            step0.assign((step0 + n) % n_batches)
            return loss

    else:
        step = tf.function(train_step, jit_compile=jit)

        @tf.function
        def train_loop(n):
            loss = tf.constant(0.0)
            for i in tf.range(n):
                loss = step(*batch_at(i))
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
    p.add_argument(
        "--tpufit-loop",
        default=None,
        help='iterations_per_loop for tpufit ("auto", "2s", an int); default: --loop',
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
    if args.tpufit_loop is None:
        args.tpufit_loop = args.loop
    elif args.tpufit_loop.isdigit():
        args.tpufit_loop = int(args.tpufit_loop)
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

    def make_model():
        return fresh_model(initial_weights)

    # Same input for both sides of a ratio: the cached tf.data pipeline (what the
    # limit reads) and, separately, shuffled numpy arrays (each side's own infeed).
    contenders = {}
    if "keras" in args.contenders:
        for spe in dict.fromkeys((1, args.loop)):
            for jit in (False, True):
                contenders[f"keras fit spe={spe} jit={jit}"] = keras_contender(
                    make_model, ds, spe, jit
                )
    ipl = args.tpufit_loop
    if "tpufit" in args.contenders:
        contenders[f"tpufit ipl={ipl}"] = tpufit_contender(make_model, ds, ipl)
    warmup = min(args.steps, 2 * args.loop)
    if args.steps % NUMPY_EPOCH == 0 and warmup % NUMPY_EPOCH == 0:
        arrays = synthetic_classification(BATCH * NUMPY_EPOCH, MLP_SIZES[0], MLP_SIZES[-1])
        if "keras" in args.contenders:
            contenders[f"numpy: keras fit spe={args.loop} jit=True"] = keras_contender(
                make_model, arrays, args.loop, True
            )
        if "tpufit" in args.contenders:
            contenders[f"numpy: tpufit ipl={ipl}"] = tpufit_contender(make_model, arrays, ipl)
    if "limit" in args.contenders:
        contenders[f"limit tf.data loop={args.loop}"] = limit_contender(make_model, ds, args.loop)
    if "resident" in args.contenders:
        contenders[f"limit resident loop={args.loop}"] = resident_contender(
            make_model, x, y, BATCH, args.loop, whole_loop_xla=False
        )
    if "xla-loop" in args.contenders:
        contenders[f"limit resident XLA loop={args.loop}"] = resident_contender(
            make_model, x, y, BATCH, args.loop, whole_loop_xla=True
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
            ("tpufit / limit", best("limit"), 0.95),
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
