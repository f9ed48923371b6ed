"""What a model_dir costs: per loop, per checkpoint, and per batch skipped on resume.

The 784-256-256-10 MLP (Adam: a 3.2 MB checkpoint) at batch 128 in loops of 10
steps. Per-loop costs are slopes of seconds against loops (runs of LOOPS_SHORT
and LOOPS_LONG loops), so per-run set-up falls out:

- no model_dir: `tm.fit(verbose=0)`;
- model_dir, saving only at the end: the checkpoint hook's bookkeeping
  (with the default NaN guard and TensorBoard summaries) per loop;
- model_dir, saving every loop: plus one checkpoint write per loop.

A resumed `fit` skips, with `tf.data`'s `skip`, the batches the interrupted one
had read; the last line is that cost per skipped batch (slope of the time to the
first batch after skipping SKIP_SHORT and SKIP_LONG batches). Nothing here
asserts a time.

    python bench/checkpoint.py             # 3 repeats
    python bench/checkpoint.py --smoke     # tiny sizes, 1 repeat
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.*

import numpy as np

from bench.common import MLP_SIZES, build_mlp, compile_kwargs, environment

BATCH = 128
PER_LOOP = 10


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat")
    args = parser.parse_args(argv)
    short, long, repeats = (20, 80, args.repeats) if not args.smoke else (2, 4, 1)
    skips = (1000, 10000) if not args.smoke else (10, 20)

    import tensorflow as tf

    import tpufit
    from tpufit import data
    from tpufit.config import Layout, Mode

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * PER_LOOP, MLP_SIZES[0]), dtype=np.float32)
    y = rng.integers(0, MLP_SIZES[-1], size=len(x))
    folder = tempfile.mkdtemp()

    def contender(model_dir, **config):
        config.setdefault("save_checkpoints_secs", None)
        tm = tpufit.TPUModel(
            build_mlp(),
            iterations_per_loop=PER_LOOP,
            model_dir=model_dir,
            config=tpufit.RunConfig(keep_checkpoint_max=2, **config),
        )
        tm.compile(**compile_kwargs())

        def run(loops: int) -> None:
            # max_steps counts across fits on a model_dir: always `loops` more loops.
            tm.fit(x, y, batch_size=BATCH, max_steps=tm.global_step + loops * PER_LOOP, verbose=0)

        return run

    cases = {
        "no model_dir": contender(None),
        "model_dir, checkpoint at the end only": contender(f"{folder}/end"),
        "model_dir, checkpoint every loop": contender(
            f"{folder}/every", save_checkpoints_steps=PER_LOOP
        ),
    }
    slopes: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case(short)  # warm-up: traces and builds everything
    for _ in range(repeats):
        for name, case in cases.items():
            seconds = {}
            for loops in (short, long):
                start = time.perf_counter()
                case(loops)
                seconds[loops] = time.perf_counter() - start
            slopes[name].append(1000 * (seconds[long] - seconds[short]) / (long - short))

    request = data.InfeedRequest(Mode.TRAIN, Layout.PADDED, BATCH, shuffle=True, seed=0)
    feed = data.build_infeed(x, y, None, request, tf.distribute.get_strategy())
    skip_ms = []
    for _ in range(repeats):
        seconds = {}
        for count in skips:
            start = time.perf_counter()
            next(iter(feed.dataset.skip(count)))
            seconds[count] = time.perf_counter() - start
        skip_ms.append(1000 * (seconds[skips[1]] - seconds[skips[0]]) / (skips[1] - skips[0]))

    print(f"\nmodel_dir costs, loops of {PER_LOOP} steps at batch {BATCH} ({environment()})")
    print(f"{'case':42s} {'ms/loop':>8s} {'overhead':>9s}")
    floor = statistics.median(slopes["no model_dir"])
    for name, values in slopes.items():
        median = statistics.median(values)
        print(f"{name:42s} {median:8.3f} {median - floor:+9.3f}")
    print(f"{'resume: skipping one batch of the infeed':42s} {statistics.median(skip_ms):8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
