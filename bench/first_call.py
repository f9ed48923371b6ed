"""Time to the first result: a new model's first `fit`, `evaluate` or `predict`, in a fresh process.

A notebook pays this for every new model: tracing, XLA compiles, building
the infeed. Each (contender, call) runs in a Python of its own
(``python -m bench.first_call --contender NAME --call CALL``), which builds
and compiles the 784-256-256-10 MLP untimed, then times the one call, as
wall time and as the process's CPU time (all threads; steadier than wall
time on a shared machine):

- fit: 50 steps (6,400 rows at batch 128, one epoch);
- evaluate and predict: the same 6,400 rows at batch 128.

In ``--smoke`` (640 rows, 5 steps) the stream contender is left out.
Contenders: tpufit as it comes (``jit_compile="auto"``, ``infeed="auto"``);
tpufit with ``jit_compile=False`` (its step without XLA, so the difference
is the cost of XLA's compile and of deciding on it) and with
``infeed="stream"``; Keras with ``jit_compile=True``,
``steps_per_execution=100``. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS, BATCH = 6400, 128
SMOKE_ROWS = 640  # 5 steps
CONTENDERS = ("tpufit", "tpufit jit=False", "tpufit infeed=stream", "keras spe=100 jit=True")
SMOKE_CONTENDERS = ("tpufit", "tpufit jit=False", "keras spe=100 jit=True")
CALLS = ("fit", "evaluate", "predict")
_PREFIX = "FIRST-CALL "


def _first_call(contender: str, call: str, rows: int) -> tuple[float, float]:
    """Builds the model untimed; returns the wall and CPU seconds its first `call` takes."""
    sys.path.insert(0, str(ROOT))
    from bench.common import build_mlp, compile_kwargs, synthetic_classification

    x, y = synthetic_classification(rows, 784, 10)
    model = build_mlp()
    if contender.startswith("tpufit"):
        import tpufit

        config = tpufit.RunConfig(infeed="stream" if "stream" in contender else "auto")
        runner = tpufit.TPUModel(model, config=config)
        runner.compile(**compile_kwargs(), jit_compile=False if "jit=False" in contender else None)
    else:
        runner = model
        runner.compile(**compile_kwargs(), jit_compile=True, steps_per_execution=100)
    start, cpu_start = time.perf_counter(), time.process_time()
    if call == "fit":
        runner.fit(x, y, batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
    elif call == "evaluate":
        runner.evaluate(x, y, batch_size=BATCH, verbose=0)
    else:
        runner.predict(x, batch_size=BATCH, verbose=0)
    return time.perf_counter() - start, time.process_time() - cpu_start


def _in_child(contender: str, call: str, smoke: bool) -> tuple[float, float]:
    from bench.child import run_child

    args = ["--contender", contender, "--call", call] + (["--smoke"] * smoke)
    (line,) = run_child("bench.first_call", args, _PREFIX, timeout=600)
    result = json.loads(line)
    return result["seconds"], result["cpu_seconds"]


def first_call(smoke: bool, repeats: int) -> list:
    """The `first-call` case: one `CaseResult` per call, seconds to the first result."""
    from bench.report import CaseResult

    rows = SMOKE_ROWS if smoke else ROWS
    contenders = SMOKE_CONTENDERS if smoke else CONTENDERS
    results = []
    for call in CALLS:
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        cpu_seconds: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeats):  # round-robin: a noisy spell slows every contender alike
            for name in contenders:
                wall, cpu = _in_child(name, call, smoke)
                seconds[name].append(wall)
                cpu_seconds[name].append(cpu)
        costs = {name: statistics.median(values) for name, values in seconds.items()}
        cpu = {name: statistics.median(values) for name, values in cpu_seconds.items()}
        plain = costs.pop("tpufit jit=False")
        plain_cpu = cpu.pop("tpufit jit=False")
        notes = [
            f"tpufit with jit_compile=False: {plain:.3f} s, CPU {plain_cpu:.3f} s (XLA's "
            f"compile and deciding on it cost {costs['tpufit'] - plain:+.3f} s, CPU "
            f"{cpu['tpufit'] - plain_cpu:+.3f} s)"
        ]
        if "tpufit infeed=stream" in costs:
            stream = costs.pop("tpufit infeed=stream")
            stream_cpu = cpu.pop("tpufit infeed=stream")
            notes.append(
                f"tpufit with infeed='stream': {stream:.3f} s, CPU {stream_cpu:.3f} s "
                f"({stream - costs['tpufit']:+.3f} s, CPU {stream_cpu - cpu['tpufit']:+.3f} s "
                "against resident)"
            )
        results.append(
            CaseResult(
                f"first-{call}",
                f"a new MLP's first {call} on {rows:,} rows, batch {BATCH} "
                f"({rows // BATCH} steps), fresh process each",
                "s",
                costs,
                "tpufit",
                [("keras best", 1.0)],
                notes,
                cpu,
            )
        )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contender", choices=CONTENDERS, required=True)
    parser.add_argument("--call", choices=CALLS, required=True)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    seconds, cpu_seconds = _first_call(
        args.contender, args.call, SMOKE_ROWS if args.smoke else ROWS
    )
    print(_PREFIX + json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
