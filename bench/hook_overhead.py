"""Host overhead of hooks and callbacks per device loop.

The 784-256-256-10 MLP at batch 128 in loops of 10 steps (short loops, so the
host's share shows). Three ways to run the same loops:

- bare: the training program's `run` called in a Python loop: no hooks,
  no callbacks, no progress (the floor);
- fit, no callbacks: `tm.fit(verbose=0)`: the hook machinery with the
  Keras callback adapter, which has only `History`;
- fit, callbacks: `tm.fit(verbose=1)` with a tqdm bar, `CSVLogger` and
  `ModelCheckpoint(save_freq="epoch")`.

Per-loop cost is the slope of seconds against loops (runs of LOOPS_SHORT and
LOOPS_LONG loops), so per-run set-up and per-epoch work (the checkpoint
file) fall out. The overhead is each slope minus the bare one. Nothing here
asserts a time.

    python bench/hook_overhead.py             # 5 repeats
    python bench/hook_overhead.py --smoke     # tiny sizes, 1 repeat
"""

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.*

import keras
import numpy as np

from bench.common import MLP_SIZES, build_mlp, compile_kwargs, environment

BATCH = 128
PER_LOOP = 10


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat")
    args = parser.parse_args(argv)
    short, long, repeats = (100, 400, args.repeats) if not args.smoke else (2, 4, 1)

    import tpufit
    from tpufit import infeed

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * PER_LOOP, MLP_SIZES[0]), dtype=np.float32)
    y = rng.integers(0, MLP_SIZES[-1], size=len(x))
    tm = tpufit.TPUModel(build_mlp(), iterations_per_loop=PER_LOOP)
    tm.compile(**compile_kwargs(), metrics=["accuracy"])
    tm.fit(x, y, batch_size=BATCH, verbose=0)  # traces and builds everything once
    feed = infeed.from_user_data(
        x, y, None, BATCH, num_replicas=1, seed=0, mode="train", padded=True, shuffle=False
    )
    program = tm._replicas.program("train", True, tm.config.jit_compile)
    iterator = tm._replicas.distribute(feed.dataset)
    folder = tempfile.mkdtemp()

    def bare(loops: int) -> None:
        for _ in range(loops):
            program.run(iterator, PER_LOOP)

    def fit(loops: int, callbacks: bool) -> None:
        extra = []
        if callbacks:
            extra = [
                keras.callbacks.CSVLogger(f"{folder}/log.csv"),
                keras.callbacks.ModelCheckpoint(f"{folder}/w.weights.h5", save_weights_only=True),
            ]
        with contextlib.redirect_stderr(io.StringIO()):
            tm.fit(
                x, y, batch_size=BATCH, shuffle=False, steps_per_epoch=loops * PER_LOOP,
                callbacks=extra, verbose=1 if callbacks else 0,
            )  # fmt: skip

    cases = {
        "bare loops": bare,
        "fit, no callbacks": lambda loops: fit(loops, False),
        "fit, bar + CSVLogger + ModelCheckpoint": lambda loops: fit(loops, True),
    }
    slopes: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case(short)  # warm-up
    for _ in range(repeats):
        for name, case in cases.items():
            seconds = {}
            for loops in (short, long):
                start = time.perf_counter()
                case(loops)
                seconds[loops] = time.perf_counter() - start
            slopes[name].append(1000 * (seconds[long] - seconds[short]) / (long - short))
    print(f"\nHost cost per loop of {PER_LOOP} steps ({environment()})")
    print(f"{'case':42s} {'ms/loop':>8s} {'overhead':>9s}")
    floor = statistics.median(slopes["bare loops"])
    for name, values in slopes.items():
        median = statistics.median(values)
        print(f"{name:42s} {median:8.3f} {median - floor:+9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
