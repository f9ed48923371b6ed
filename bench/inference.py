"""Prediction and evaluation: tpufit against Keras's own predict/evaluate.

The 784-256-256-10 MLP, the same weights on both sides, in one process:

- predict on 200,001 rows at batch 1,000 (throughput; the padded last batch
  included) and on 10 rows (the fixed cost of one call);
- evaluate (loss and accuracy) on 100,001 rows at batch 1,000.

Each case runs once to warm up (traces and compiles excluded), then REPEATS
times alternately; the table gives the median seconds per call and the speed
ratio Keras / tpufit (above 1: tpufit faster). It also checks that both sides
return the same numbers. Nothing here asserts a time.

    python bench/inference.py             # 3 repeats
    python bench/inference.py --smoke     # small sizes, 1 repeat
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.*

import numpy as np

from bench.common import MLP_SIZES, build_mlp, compile_kwargs, environment

BATCH = 1000


def seconds(call, repeats: int) -> tuple[float, object]:
    result = call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="small sizes, 1 repeat")
    args = parser.parse_args(argv)
    predict_rows, eval_rows, repeats = 200_001, 100_001, args.repeats
    if args.smoke:
        predict_rows, eval_rows, repeats = 2_001, 1_001, 1

    import tpufit

    rng = np.random.default_rng(0)
    x = rng.standard_normal((predict_rows, MLP_SIZES[0]), dtype=np.float32)
    y = rng.integers(0, MLP_SIZES[-1], size=predict_rows)
    model = build_mlp()
    model.compile(**compile_kwargs(), metrics=["accuracy"])
    tm = tpufit.TPUModel(model, iterations_per_loop=100)
    tm.compile(**compile_kwargs(), metrics=["accuracy"])

    cases = {
        f"predict {predict_rows:,} rows": (
            lambda: model.predict(x, batch_size=BATCH, verbose=0),
            lambda: tm.predict(x, batch_size=BATCH, verbose=0),
        ),
        "predict 10 rows": (
            lambda: model.predict(x[:10], verbose=0),
            lambda: tm.predict(x[:10], verbose=0),
        ),
        f"evaluate {eval_rows:,} rows": (
            lambda: model.evaluate(
                x[:eval_rows], y[:eval_rows], batch_size=BATCH, verbose=0, return_dict=True
            ),
            lambda: tm.evaluate(
                x[:eval_rows], y[:eval_rows], batch_size=BATCH, verbose=0, return_dict=True
            ),
        ),
    }
    print(f"MLP {'-'.join(map(str, MLP_SIZES))}, median of {repeats}; {environment()}")
    print(f"\n{'case':<26}{'keras s':>10}{'tpufit s':>10}{'speed':>8}  same result")
    for name, (keras_call, tpufit_call) in cases.items():
        keras_s, keras_out = seconds(keras_call, repeats)
        tpufit_s, tpufit_out = seconds(tpufit_call, repeats)
        if isinstance(keras_out, dict):
            same = all(np.isclose(keras_out[k], tpufit_out[k], rtol=1e-5) for k in keras_out)
        else:
            same = keras_out.shape == tpufit_out.shape and np.allclose(
                keras_out, tpufit_out, atol=1e-4
            )
        print(f"{name:<26}{keras_s:>10.4f}{tpufit_s:>10.4f}{keras_s / tpufit_s:>7.2f}x  {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
