"""Host overhead of hooks and callbacks per device loop.

The 784-256-256-10 MLP at batch 128 in loops of 10 steps (short loops, so the
host's share shows). Three ways to run the same loops:

- bare: the training program's `run` called in a Python loop: no hooks,
  no callbacks, no progress (the floor);
- fit, no callbacks: `tm.fit(verbose=0)`: the hook machinery with the
  Keras callback adapter, which has only `History`;
- fit, callbacks: `tm.fit(verbose=1)` with a tqdm bar, `CSVLogger` and
  `ModelCheckpoint(save_freq="epoch")`.

The host cost per loop is measured directly: the time from the end of one
`run` of the program (device loop and outfeed copy) to the start of the next
within one `fit`, i.e. everything the host does between two loops (hook
events, callbacks, progress, loop accounting). Its mean over all loops of
several fits is reported, with the wall-clock time per loop for reference.
The first and last loop of a fit are not between two loops and are left
out, so per-run set-up and the end-of-epoch checkpoint file do not count.
Nothing here asserts a time.

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
    from tpufit import data
    from tpufit.config import Layout, Mode

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * PER_LOOP, MLP_SIZES[0]), dtype=np.float32)
    y = rng.integers(0, MLP_SIZES[-1], size=len(x))
    tm = tpufit.TPUModel(build_mlp(), iterations_per_loop=PER_LOOP)
    tm.compile(**compile_kwargs(), metrics=["accuracy"])
    tm.fit(x, y, batch_size=BATCH, verbose=0)  # traces and builds everything once
    request = data.InfeedRequest(Mode.TRAIN, Layout.PADDED, BATCH, shuffle=False, seed=0)
    feed = data.build_infeed(x, y, None, request, tm.strategy)
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

    spans: list[tuple[float, float]] = []
    original_run = type(program).run

    def timed_run(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original_run(self, *args, **kwargs)
        finally:
            spans.append((start, time.perf_counter()))

    type(program).run = timed_run
    cases = {
        "bare loops": bare,
        "fit, no callbacks": lambda loops: fit(loops, False),
        "fit, bar + CSVLogger + ModelCheckpoint": lambda loops: fit(loops, True),
    }
    gaps: dict[str, list[float]] = {name: [] for name in cases}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case(short)  # warm-up
    for _ in range(repeats):
        for name, case in cases.items():
            spans.clear()
            start = time.perf_counter()
            case(long)
            wall[name].append(1000 * (time.perf_counter() - start) / long)
            gaps[name] += [1000 * (b[0] - a[1]) for a, b in zip(spans, spans[1:], strict=False)]
    print(f"\nHost cost per loop of {PER_LOOP} steps ({environment()})")
    print(f"{'case':42s} {'host ms between loops':>22s} {'(median)':>9s} {'wall ms/loop':>13s}")
    for name in cases:
        mean, median = statistics.fmean(gaps[name]), statistics.median(gaps[name])
        print(f"{name:42s} {mean:22.3f} {median:9.3f} {statistics.median(wall[name]):13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
