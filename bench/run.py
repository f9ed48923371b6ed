"""The benchmark suite: every case in a process of its own, one table at the end.

    python -m bench                    # the full suite, median of 3 (under 10 minutes on 2 cores)
    python -m bench --smoke            # tiny sizes, 1 repeat: checks everything runs (CI)
    python -m bench --cases train-small,predict-10 --repeats 5
    python -m bench --json results.json

A case is a function ``(smoke, repeats) -> CaseResult | list[CaseResult]``
registered in `CASES` as ``"module:function"``; each runs in a fresh Python
(``python -m bench.run --case NAME``) so no case inherits another's threads,
caches or memory, and prints its results as JSON lines for this parent.
Nothing here asserts a time; the table says which targets the measured
ratios met.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.* when run as a script

from bench.report import CaseResult, table  # noqa: E402

CASES = {
    "train-small": "bench.training:train_small",
    "train-conv": "bench.training:train_conv",
    "train-input-bound": "bench.training:train_input_bound",
    "predict-large": "bench.inference:predict_large",
    "predict-10": "bench.inference:predict_small",
    "evaluate": "bench.inference:evaluate",
    "first-call": "bench.first_call:first_call",
}
RESULT_PREFIX = "BENCH-RESULT "


def run_case(name: str, smoke: bool, repeats: int) -> list[CaseResult]:
    """Runs one case in this process and returns its results."""
    module, function = CASES[name].split(":")
    results = getattr(importlib.import_module(module), function)(smoke, repeats)
    return results if isinstance(results, list) else [results]


def run_in_child(name: str, smoke: bool, repeats: int, timeout: float) -> list[CaseResult]:
    """Runs one case in a fresh Python and reads back its results."""
    command = [sys.executable, "-m", "bench.run", "--case", name, "--repeats", str(repeats)]
    if smoke:
        command.append("--smoke")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    results = [
        CaseResult.from_json(line[len(RESULT_PREFIX) :])
        for line in done.stdout.splitlines()
        if line.startswith(RESULT_PREFIX)
    ]
    if done.returncode != 0 or not results:
        raise RuntimeError(
            f"case {name} failed (exit code {done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat (CI)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each contender")
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES)
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child running one case
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    if args.repeats < 1:
        parser.error("--repeats must be a positive integer")
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.cases + [args.case or next(iter(CASES))] if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; pick from {list(CASES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.case:
        for result in run_case(args.case, args.smoke, args.repeats):
            print(RESULT_PREFIX + result.to_json(), flush=True)
        return 0
    from bench.common import environment

    start = time.perf_counter()
    results: list[CaseResult] = []
    for name in args.cases:
        case_start = time.perf_counter()
        print(f"== {name}", flush=True)
        results += run_in_child(name, args.smoke, args.repeats, args.timeout)
        print(f"   {time.perf_counter() - case_start:.0f} s", flush=True)
    mode = "smoke run" if args.smoke else f"median of {args.repeats} after a warm-up"
    print(f"\n{environment()}; {mode}; {time.perf_counter() - start:.0f} s in all\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([json.loads(r.to_json()) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
