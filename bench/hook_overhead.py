"""Host overhead of hooks and callbacks per device loop.

The 784-256-256-10 MLP at batch 128 in loops of 10 steps (short loops, so the
host's share shows). Three ways to run the same loops:

- bare: the training program's `run` called in a Python loop: no hooks,
  no callbacks, no progress (the floor);
- fit, History only: `tm.fit(verbose=0)`: the hook machinery with the
  Keras callback adapter, which has only `History`;
- fit, callbacks: `tm.fit(verbose=1)` with a tqdm bar, `CSVLogger` and
  `ModelCheckpoint(save_freq="epoch")`.

Each runs twice: on one device (the model is the replicas' model), and with
the model built outside the scope of a 4-replica `MirroredStrategy` over
logical CPUs, so the replicas run a clone and callbacks see the user's model
(weights copied between the two where a callback needs them). The CPU is split
into logical devices before TensorFlow starts, so the second runs in a child
process started with `--replicas 4`.

The host cost per loop is measured directly: the time from the end of one
`run` of the program (device loop and outfeed copy) to the start of the next
within one `fit`, i.e. everything the host does between two loops (hook
events, callbacks, progress, loop accounting). Its mean over all loops of
several fits is reported, with the wall-clock time per loop for reference.
The first and last loop of a fit are not between two loops and are left
out, so per-run set-up and the end-of-epoch checkpoint file do not count.
Nothing here asserts a time.

    python bench/hook_overhead.py               # 5 repeats, 1 then 4 replicas
    python bench/hook_overhead.py --replicas 4  # only the 4-replica, cloned-model cases
    python bench/hook_overhead.py --smoke       # tiny sizes, 1 repeat
"""

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.*

BATCH = 128
PER_LOOP = 10
CHILD_REPLICAS = 4


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat")
    parser.add_argument(
        "--replicas",
        type=int,
        help=f"run only the cases over this many logical CPUs (default: 1, then {CHILD_REPLICAS} "
        "in a child process)",
    )
    args = parser.parse_args(argv)
    if args.replicas is not None:
        return measure(args.replicas, args.repeats, args.smoke)
    code = measure(1, args.repeats, args.smoke)
    passed = [f"--repeats={args.repeats}"] + (["--smoke"] if args.smoke else [])
    child = [sys.executable, __file__, f"--replicas={CHILD_REPLICAS}", *passed]
    return code or subprocess.run(child, check=False).returncode


def measure(replicas: int, repeats: int, smoke: bool) -> int:
    """Prints the host cost per loop of each case over `replicas` logical CPUs."""
    from bench.devices import split_cpu

    split_cpu(replicas)
    import keras
    import numpy as np
    import tensorflow as tf

    import tpufit
    from bench.common import MLP_SIZES, build_mlp, compile_kwargs, environment
    from tpufit import data
    from tpufit.config import Layout, Mode
    from tpufit.device.programs import LoopProgram

    short, long, repeats = (100, 400, repeats) if not smoke else (2, 4, 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * PER_LOOP, MLP_SIZES[0]), dtype=np.float32)
    y = rng.integers(0, MLP_SIZES[-1], size=len(x))
    if replicas > 1:
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
        model = build_mlp()  # outside the strategy's scope: the replicas run a clone
        # XLA on CPU compiles one device's step, so several replicas run without it.
        jit_compile = False
    else:
        strategy, model, jit_compile = None, build_mlp(), "auto"
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=PER_LOOP)
    tm.compile(**compile_kwargs(), metrics=["accuracy"], jit_compile=jit_compile)
    tm.fit(x, y, batch_size=BATCH, verbose=0)  # traces and builds everything once
    (program,) = (p for (mode, *_), p in tm._replicas._programs.items() if mode == "train")
    request = data.InfeedRequest(Mode.TRAIN, Layout.PADDED, BATCH, shuffle=False, seed=0)
    feed = data.build_infeed(x, y, None, request, tm.strategy)
    iterator = tm._replicas.distribute(feed.dataset)
    # One epoch of many loops: as in Keras, an epoch longer than its data needs the data repeated.
    repeated = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().repeat()
    folder = tempfile.mkdtemp()

    def bare(loops: int) -> None:
        for _ in range(loops):
            program.run(iterator, PER_LOOP)

    def fit(loops: int, callbacks: bool) -> None:
        extra = []
        if callbacks:
            extra = [
                keras.callbacks.CSVLogger(f"{folder}/log.csv"),
                keras.callbacks.ModelCheckpoint(
                    f"{folder}/w.weights.h5", save_weights_only=True, save_freq="epoch"
                ),
            ]
        with contextlib.redirect_stderr(io.StringIO()):
            tm.fit(
                repeated, steps_per_epoch=loops * PER_LOOP,
                callbacks=extra, verbose=1 if callbacks else 0,
            )  # fmt: skip

    spans: list[tuple[float, float]] = []
    original_run = LoopProgram.run

    def timed_run(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original_run(self, *args, **kwargs)
        finally:
            spans.append((start, time.perf_counter()))

    LoopProgram.run = timed_run
    cases = {
        "bare loops": bare,
        "fit, History only": lambda loops: fit(loops, False),
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
    model_is = "cloned: built outside the scope" if tm._replicas.cloned else "the replicas' own"
    print(f"\nHost cost per loop of {PER_LOOP} steps, {replicas} replica(s), model {model_is}")
    print(f"({environment()})")
    print(f"{'case':42s} {'host ms between loops':>22s} {'(median)':>9s} {'wall ms/loop':>13s}")
    for name in cases:
        mean, median = statistics.fmean(gaps[name]), statistics.median(gaps[name])
        print(f"{name:42s} {mean:22.3f} {median:9.3f} {statistics.median(wall[name]):13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
