"""Streaming predict: peak memory of `TPUModel.predict_batches` against the number of rows.

A 32-64-64 MLP predicts a generated `tf.data` source (`Dataset.range(rows)`,
batched, each row filled from its index) of 10^5 and 10^6 rows (or `--rows`),
in loops of `--loop` steps of `--batch` rows. For each size the script
consumes `predict_batches` (checking every row arrived, in order) and reports
the peak resident memory (RSS) the call added over the process's memory
before it, read from /proc (Linux). Streaming keeps only one loop's outputs,
so the figure should not grow with the rows; `--predict` also measures
`predict`, whose result holds every row (64 float32 a row: 256 MB at 10^6).
A warm-up run traces the program first. Nothing here asserts a time.

    python bench/predict_stream.py                     # 10^5 and 10^6 rows
    python bench/predict_stream.py --rows 10000000     # any sizes
    python bench/predict_stream.py --smoke             # 10^4 and 10^5 rows, quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.*

import keras
import numpy as np
import tensorflow as tf

from bench.common import environment, peak_rss_growth

FEATURES, OUTPUTS = 32, 64


def source(rows: int, batch: int) -> tf.data.Dataset:
    """`rows` rows of `FEATURES` features, each row filled with its index modulo 97, batched."""

    def fill(index):
        value = tf.cast(index % 97, tf.float32)[:, None] / 97.0
        return tf.tile(value, [1, FEATURES])

    return tf.data.Dataset.range(rows).batch(batch).map(fill)


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(OUTPUTS),
        ]
    )


def stream(tm, rows: int, batch: int, table: np.ndarray) -> int:
    """Consumes `predict_batches` over `rows` rows; returns how many arrived, checked in order.

    Row `i` is filled from `i % 97`, so its outputs are `table[i % 97]`.
    """
    seen = 0
    for item in tm.predict_batches(source(rows, batch)):
        expected = table[np.arange(seen, seen + len(item)) % 97]
        np.testing.assert_allclose(item, expected, rtol=1e-5, atol=1e-6)
        seen += len(item)
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10**5, 10**6])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--loop", type=int, default=20, help="iterations_per_loop")
    parser.add_argument("--predict", action="store_true", help="also measure predict")
    parser.add_argument("--smoke", action="store_true", help="10^4 and 10^5 rows")
    args = parser.parse_args(argv)
    sizes = [10**4, 10**5] if args.smoke else args.rows

    import tpufit

    tm = tpufit.TPUModel(build_model(), iterations_per_loop=args.loop)
    # Warm-up (traces and compiles the program); the outputs of the 97 distinct rows.
    table = tm.predict(source(97, args.batch), verbose=0)
    stream(tm, args.batch * 2, args.batch, table)
    print(environment())
    loop_mb = args.loop * args.batch * OUTPUTS * 4 / 2**20
    print(f"batch {args.batch}, {args.loop} steps a loop: one loop's outputs {loop_mb:.1f} MB")
    print(f"{'rows':>10} {'call':>16} {'peak RSS added':>15} {'rows/s':>10}")
    for rows in sizes:
        calls = {"predict_batches": lambda rows=rows: stream(tm, rows, args.batch, table)}
        if args.predict:
            calls["predict"] = lambda rows=rows: len(
                tm.predict(source(rows, args.batch), verbose=0)
            )
        for name, call in calls.items():
            started = time.perf_counter()
            peak, seen = peak_rss_growth(call)
            seconds = time.perf_counter() - started
            if seen != rows:
                raise AssertionError(f"{name} gave {seen} rows of {rows}")
            print(f"{rows:>10} {name:>16} {peak / 2**20:>12.1f} MB {rows / seconds:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
