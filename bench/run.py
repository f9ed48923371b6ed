"""The benchmark suite: every case in a process of its own, one table at the end.

    python -m bench                    # the full suite, median of 3 (under 10 minutes on 2 cores)
    python -m bench --smoke            # tiny sizes, 1 repeat: checks everything runs (CI)
    python -m bench --cases train-small,predict-10 --repeats 5
    python -m bench --json results.json
    python -m bench --scaling          # the scaling cases: tables, and plots in docs/img/
    python -m bench --scaling --smoke  # the same at tiny sizes, plots in a temporary folder

A case is a function ``(smoke, repeats) -> CaseResult | list[CaseResult]``
registered in `CASES` as ``"module:function"``; each runs in a fresh Python
(``python -m bench.run --case NAME``) so no case inherits another's threads,
caches or memory, and prints its results as JSON lines for this parent.
Nothing here asserts a time; the table says which targets the measured
ratios met. The scaling cases (`SCALING`) return `bench.scaling_report.Scaling`
results instead: costs against a varied size, printed as tables and written
with their plots (``--out``). ``--smoke`` runs both kinds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.* when run as a script

from bench.child import run_child  # noqa: E402
from bench.report import CaseResult, table  # noqa: E402
from bench.scaling_report import Scaling, text_table, write  # noqa: E402

CASES = {
    "train-small": "bench.training:train_small",
    "train-conv": "bench.training:train_conv",
    "train-input-bound": "bench.training:train_input_bound",
    "predict-large": "bench.inference:predict_large",
    "predict-10": "bench.inference:predict_small",
    "evaluate": "bench.inference:evaluate",
    "first-call": "bench.first_call:first_call",
}
SCALING = {
    "scale-rows": "bench.scaling:rows",
    "scale-loop": "bench.scaling:loop_length",
    "scale-hooks": "bench.scaling:hooks",
    "scale-replicas": "bench.scaling_replicas:replicas",
    "scale-infeed": "bench.scaling:infeed",
}
ALL = {**CASES, **SCALING}
RESULT_PREFIX = "BENCH-RESULT "
KINDS = {kind.__name__: kind for kind in (CaseResult, Scaling)}


def run_case(name: str, smoke: bool, repeats: int) -> list[CaseResult | Scaling]:
    """Runs one case in this process and returns its results."""
    module, function = ALL[name].split(":")
    results = getattr(importlib.import_module(module), function)(smoke, repeats)
    return results if isinstance(results, list) else [results]


def run_in_child(
    name: str, smoke: bool, repeats: int, timeout: float
) -> list[CaseResult | Scaling]:
    """Runs one case in a fresh Python and reads back its results."""
    args = ["--case", name, "--repeats", str(repeats)] + (["--smoke"] * smoke)
    results = []
    for line in run_child("bench.run", args, RESULT_PREFIX, timeout):
        kind, text = line.split(" ", 1)
        results.append(KINDS[kind].from_json(text))
    return results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat (CI)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each contender")
    parser.add_argument(
        "--cases", help="comma-separated subset of: " + ", ".join(ALL) + " (default: all "
        "but the scaling cases; with --smoke, all)",
    )  # fmt: skip
    parser.add_argument("--scaling", action="store_true", help="run the scaling cases")
    parser.add_argument(
        "--out", type=Path, help="where the scaling tables (scaling.md) and plots go (default: "
        "docs/img, or a temporary folder with --smoke)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child running one case
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    if args.repeats < 1:
        parser.error("--repeats must be a positive integer")
    if args.cases is not None:
        args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    else:
        args.cases = list(SCALING if args.scaling else ALL if args.smoke else CASES)
    unknown = [c for c in args.cases + [args.case or next(iter(CASES))] if c not in ALL]
    if unknown:
        parser.error(f"unknown cases {unknown}; pick from {list(ALL)}")
    if args.out is None:
        smoke_out = Path(tempfile.gettempdir()) / "tpufit-bench-scaling"
        args.out = smoke_out if args.smoke else ROOT / "docs" / "img"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.case:
        for result in run_case(args.case, args.smoke, args.repeats):
            print(f"{RESULT_PREFIX}{type(result).__name__} {result.to_json()}", flush=True)
        return 0
    from bench.common import environment

    start, load = time.perf_counter(), os.getloadavg()[0]
    results: list[CaseResult | Scaling] = []
    for name in args.cases:
        case_start = time.perf_counter()
        print(f"== {name}", flush=True)
        results += run_in_child(name, args.smoke, args.repeats, args.timeout)
        print(f"   {time.perf_counter() - case_start:.0f} s", flush=True)
    mode = "smoke run" if args.smoke else f"median of {args.repeats} after a warm-up"
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    header = (
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {environment()}; "
        f"{mode}; {time.perf_counter() - start:.0f} s in all; load average (1 min) "
        f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"\n{header}\n")
    cases = [r for r in results if isinstance(r, CaseResult)]
    scalings = [r for r in results if isinstance(r, Scaling)]
    if cases:
        print(table(cases) + "\n")
    for scaling in scalings:
        print(text_table(scaling) + "\n")
    if scalings:
        print(f"Scaling tables and plots written to {write(scalings, args.out, header)}")
    if args.json:
        args.json.write_text(json.dumps([json.loads(r.to_json()) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
