"""Scaling case (d): train ms/step on 1 against 4 replicas at the same global batch.

The replicas are logical CPUs, which must be set before TensorFlow's runtime
starts, so each replica count runs in a child process of its own
(``python -m bench.scaling_replicas --replicas N``) that prints its medians
as one JSON line. The contenders train the suite's MLP from the same weights
on a cached dataset of global batch 128: tpufit (``jit_compile="auto"``,
which takes XLA on one replica only), tpufit without XLA, and Keras ``fit``
(no XLA), under a `MirroredStrategy` over the logical CPUs when there are
several. Keras runs at ``steps_per_execution=1``: above 1, its ``fit`` under
that strategy failed here (TensorFlow 2.21, Keras 3.15: "You must feed a
value for placeholder tensor" in its multi-step loop). The two cores are shared by all
replicas, so 4 replicas measure the cost of the replication (splitting the
batch, all-reducing the gradients), not a speed-up. Nothing here asserts a
time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GLOBAL_BATCH = 128
LOOP = 100
COUNTS = (1, 4)
_PREFIX = "REPLICAS "


def _measure(replicas: int, smoke: bool, repeats: int) -> dict[str, float]:
    """Median ms/step of each contender over ``replicas`` logical CPUs (in this process)."""
    sys.path.insert(0, str(ROOT))
    from bench.devices import split_cpu

    split_cpu(replicas)
    import tensorflow as tf

    import tpufit
    from bench import throughput
    from bench.common import (
        MLP_SIZES,
        build_mlp,
        cached_dataset,
        compile_kwargs,
        measure,
        synthetic_classification,
    )

    steps, loop = (10, 5) if smoke else (400, LOOP)
    strategy = (
        tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
        if replicas > 1
        else tf.distribute.get_strategy()
    )
    x, y = synthetic_classification(GLOBAL_BATCH * 16, MLP_SIZES[0], MLP_SIZES[-1])
    ds = cached_dataset(x, y, GLOBAL_BATCH)
    weights = build_mlp().get_weights()

    def make_model():
        with strategy.scope():
            model = build_mlp()
            model.set_weights(weights)
        return model

    contenders = {}
    for jit in ("auto", False):
        tm = tpufit.TPUModel(
            make_model(), strategy=strategy if replicas > 1 else None, iterations_per_loop=loop
        )
        tm.compile(**compile_kwargs(), jit_compile=jit)
        name = "tpufit" if jit == "auto" else "tpufit jit=False"
        contenders[name] = throughput.tpufit_runner(tm, ds)
    model = make_model()
    with strategy.scope():
        model.compile(**compile_kwargs(), jit_compile=False)
    contenders["keras spe=1"] = throughput.keras_runner(model, ds)
    results = measure(contenders, steps, steps, repeats, log=lambda line: None)
    return {name: r.median_ms for name, r in results.items()}


def _in_child(replicas: int, smoke: bool, repeats: int) -> dict[str, float]:
    from bench.child import run_child

    args = ["--replicas", str(replicas), "--repeats", str(repeats)] + (["--smoke"] * smoke)
    (line,) = run_child("bench.scaling_replicas", args, _PREFIX, timeout=900)
    return json.loads(line)


def replicas(smoke: bool, repeats: int) -> list:
    """The case: ms/step of each contender on 1 and on 4 replicas."""
    from bench.scaling_report import Scaling

    measured = [_in_child(n, smoke, repeats) for n in COUNTS]
    series = {name: [m[name] for m in measured] for name in measured[0]}
    return [
        Scaling(
            "replicas",
            f"train ms/step, 1 against {COUNTS[-1]} replicas (logical CPUs on the same "
            f"cores), global batch {GLOBAL_BATCH}",
            "replicas",
            list(COUNTS),
            "ms/step",
            series,
            notes=[
                f"one process per replica count; several replicas run a MirroredStrategy "
                f"over logical CPUs; tpufit in loops of {LOOP} steps.",
                'tpufit\'s jit_compile="auto" takes XLA on one replica and not on several; '
                "tpufit jit=False and Keras run without XLA on both.",
                "keras spe=1: Keras fit at steps_per_execution=1; above 1 it failed under "
                "MirroredStrategy here (placeholder error in its multi-step loop).",
                "The logical CPUs share the machine's cores: the figure is the cost of "
                "replication (split batch, gradient all-reduce), not a speed-up.",
            ],
        )
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    medians = _measure(args.replicas, args.smoke, args.repeats)
    print(_PREFIX + json.dumps(medians), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
