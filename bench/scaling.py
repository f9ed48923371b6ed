"""Scaling cases: how costs grow with rows, loop length, hooks and infeed size.

``python -m bench --scaling`` runs these (and ``bench/scaling_replicas.py``),
each in a fresh process like the suite's cases, and writes their tables and
plots (`bench.scaling_report`). Each returns `Scaling` results; the timing is
the suite's own (`bench.common.measure`, `bench.common.time_calls`: a warm-up,
then the repeats round-robin, the median):

- rows: predict and evaluate seconds per call from 10 to 10^6 rows, tpufit
  against Keras, with each one's fitted fixed cost and cost per row;
- loop: train ms/step at ``iterations_per_loop`` (Keras: ``steps_per_execution``)
  1, 10, 100, 1000 over the same number of steps;
- hooks: host time per loop with 0, 5, 10, 20 tpufit hooks or Keras callbacks;
- infeed: predict with the resident and the streamed infeed as the array grows,
  marking the size up to which ``infeed="auto"`` keeps it resident.

The rows and infeed cases use a smaller MLP (64-128-128-10) than the suite's,
so that 10^6 rows take 256 MB. Nothing here asserts a time.
"""

from __future__ import annotations

import keras
import numpy as np

import tpufit
from bench import throughput
from bench.common import (
    MLP_SIZES,
    build_mlp,
    cached_dataset,
    compile_kwargs,
    measure,
    peak_rss_growth,
    synthetic_classification,
)
from bench.inference import _models, _time
from bench.scaling_report import Scaling

SCALE_SIZES = (64, 128, 128, 10)
BATCH = 1000
TRAIN_BATCH = 128
KERAS = [(1, False), (100, True)]  # Keras's default, and its best setting for throughput


def _keras_label(name: str) -> str:
    return name.replace("keras spe=1 jit=False", "keras default").replace(" jit=True", " XLA")


def _row_calls(models: dict, x, y) -> tuple[dict, dict]:
    """Each model's predict and evaluate call on ``x`` (and ``y``), by contender label."""
    kwargs = {"batch_size": BATCH, "verbose": 0}
    predict, evaluate = {}, {}
    for name, model in models.items():
        label = _keras_label(name)
        predict[label] = lambda m=model: m.predict(x, **kwargs)
        evaluate[label] = lambda m=model: m.evaluate(x, y, return_dict=True, **kwargs)
    return predict, evaluate


def rows(smoke: bool, repeats: int) -> list[Scaling]:
    """(a) predict and evaluate seconds per call against rows, and their fitted lines."""
    sizes = [10, 100, 1000] if smoke else [10**k for k in range(1, 7)]
    tm, keras_models = _models(KERAS, metrics=["accuracy"], sizes=SCALE_SIZES)
    costs: dict[str, dict[str, list]] = {"predict": {}, "evaluate": {}}
    for n in sizes:
        x, y = synthetic_classification(n, SCALE_SIZES[0], SCALE_SIZES[-1], seed=n)
        predict, evaluate = _row_calls({"tpufit": tm, **keras_models}, x, y)
        for call, calls, atol in (("predict", predict, 1e-4), ("evaluate", evaluate, 1e-5)):
            medians, _ = _time(calls, repeats, "tpufit", atol)
            for name, seconds in medians.items():
                costs[call].setdefault(name, []).append(seconds)
    model = "-".join(map(str, SCALE_SIZES))
    return [
        Scaling(
            f"rows-{call}",
            f"{call} seconds against rows, MLP {model}, batch {BATCH:,}",
            "rows",
            sizes,
            "s/call",
            series,
            notes=[
                "Keras default: steps_per_execution=1, no XLA; Keras XLA: "
                "steps_per_execution=100, jit_compile=True; tpufit: the defaults.",
                "fitted line: least squares weighted by 1/seconds (relative error).",
            ],
            log_x=True,
            log_y=True,
            fit_line=True,
            per_unit="µs/row",
            per_unit_scale=1e6,
        )
        for call, series in costs.items()
    ]


def loop_length(smoke: bool, repeats: int) -> list[Scaling]:
    """(b) train ms/step against iterations_per_loop, the same steps each."""
    loops, steps = ([1, 10], 20) if smoke else ([1, 10, 100, 1000], 1000)
    x, y = synthetic_classification(TRAIN_BATCH * 16, MLP_SIZES[0], MLP_SIZES[-1])
    ds = cached_dataset(x, y, TRAIN_BATCH)
    weights = build_mlp().get_weights()

    def make_model():
        model = build_mlp()
        model.set_weights(weights)
        return model

    contenders = {}
    for loop in loops:
        contenders[f"tpufit {loop}"] = throughput.tpufit_contender(make_model, ds, loop)
        contenders[f"keras {loop}"] = throughput.keras_contender(make_model, ds, loop, True)
    results = measure(contenders, steps, steps, repeats)
    host = [
        1000 * results[f"tpufit {loop}"].timings[-1].stats.host_seconds / steps for loop in loops
    ]
    series = {
        "tpufit": [results[f"tpufit {loop}"].median_ms for loop in loops],
        "keras XLA": [results[f"keras {loop}"].median_ms for loop in loops],
        "tpufit host part": host,
    }
    return [
        Scaling(
            "loop",
            f"train ms/step against iterations_per_loop, MLP, batch {TRAIN_BATCH}, {steps:,} steps",
            "iterations_per_loop (Keras: steps_per_execution)",
            loops,
            "ms/step",
            series,
            notes=[
                "keras XLA: fit with steps_per_execution at the same value, jit_compile=True; "
                "both on a cached tf.data dataset.",
                "tpufit host part: the host time around the loops per step (last run's "
                "last_run_stats), part of tpufit's ms/step.",
            ],
            log_x=True,
            log_y=True,
        )
    ]


class CountingHook(tpufit.Hook):
    """A tpufit hook that only counts its loops: the cost of the hook machinery itself."""

    def __init__(self):
        self.loops = 0

    def after_run(self, ctx, values):
        self.loops += 1


class CountingCallback(keras.callbacks.Callback):
    """A Keras callback that only counts batch ends (per loop under tpufit or spe>1)."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def hooks(smoke: bool, repeats: int) -> list[Scaling]:
    """(c) host time per loop against the number of hooks and of Keras callbacks."""
    counts, loops, per_loop = ([0, 2], 3, 10) if smoke else ([0, 5, 10, 20], 50, 10)
    steps = loops * per_loop
    x, y = synthetic_classification(TRAIN_BATCH * 16, MLP_SIZES[0], MLP_SIZES[-1])
    ds = cached_dataset(x, y, TRAIN_BATCH)
    tm = tpufit.TPUModel(build_mlp(), iterations_per_loop=per_loop)
    tm.compile(**compile_kwargs())
    model = build_mlp()
    model.compile(**compile_kwargs(), steps_per_execution=per_loop, jit_compile=True)
    contenders = {}
    for n in counts:
        hook_list = [CountingHook() for _ in range(n)]
        callback_list = [CountingCallback() for _ in range(n)]
        contenders[f"tpufit hooks {n}"] = throughput.tpufit_runner(tm, ds, hooks=hook_list)
        contenders[f"tpufit callbacks {n}"] = throughput.tpufit_runner(
            tm, ds, callbacks=callback_list
        )
        contenders[f"keras callbacks {n}"] = throughput.keras_runner(model, ds, callback_list)
    results = measure(contenders, steps, steps, repeats)

    def host_ms(name: str) -> float:
        stats = [t.stats for t in results[name].timings]
        return float(np.median([1000 * s.host_seconds / s.loops for s in stats]))

    def wall_ms(name: str) -> float:
        return results[name].median_ms * per_loop

    series = {
        "tpufit hooks: host": [host_ms(f"tpufit hooks {n}") for n in counts],
        "tpufit callbacks: host": [host_ms(f"tpufit callbacks {n}") for n in counts],
        "tpufit callbacks: wall": [wall_ms(f"tpufit callbacks {n}") for n in counts],
        "keras callbacks: wall": [wall_ms(f"keras callbacks {n}") for n in counts],
    }
    return [
        Scaling(
            "hooks",
            f"host time per loop of {per_loop} steps against hooks and callbacks "
            f"(MLP, batch {TRAIN_BATCH}, {loops} loops)",
            "hooks or callbacks",
            counts,
            "ms/loop",
            series,
            notes=[
                "hooks: tpufit.Hook counting after_run; callbacks: keras.callbacks.Callback "
                "counting on_train_batch_end (tpufit passes them once per loop).",
                "host: tpufit's last_run_stats.host_seconds per loop (calling the program, "
                "the outfeed, hooks and callbacks); wall: the whole loop, steps included.",
                f"keras: fit with steps_per_execution={per_loop}, jit_compile=True, the "
                "same callbacks.",
            ],
        )
    ]


def _infeed_calls(models: dict, x: np.ndarray, copies: int) -> dict:
    """Predict calls on ``x`` through each infeed.

    "resident, new array" predicts on a new copy of ``x`` each call (made here,
    untimed) and so pays the copy to the device each time; "resident, same
    array" predicts on ``x`` again, as a notebook does, and finds it cached.
    """
    kwargs = {"batch_size": BATCH, "verbose": 0}
    fresh = [x.copy() for _ in range(copies)]
    return {
        "stream": lambda: models["stream"].predict(x, **kwargs),
        "resident, new array": lambda: models["resident"].predict(fresh.pop(), **kwargs),
        "resident, same array": lambda: models["resident"].predict(x, **kwargs),
    }


def infeed(smoke: bool, repeats: int) -> list[Scaling]:
    """(e) predict with the resident and the streamed infeed as the array grows."""
    from tpufit.data.resident import budget_bytes

    sizes = [1000, 3000] if smoke else [10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6]
    weights = build_mlp(SCALE_SIZES).get_weights()
    models = {}
    for mode in ("resident", "stream"):
        model = build_mlp(SCALE_SIZES)
        model.set_weights(weights)
        models[mode] = tpufit.TPUModel(model, config=tpufit.RunConfig(infeed=mode))
        models[mode].compile(**compile_kwargs())
    seconds: dict[str, list] = {}
    rss: dict[str, list] = {}
    for n in sizes:
        x, _ = synthetic_classification(n, SCALE_SIZES[0], SCALE_SIZES[-1], seed=n)
        calls = _infeed_calls(models, x, copies=repeats + 3)
        medians, _ = _time(calls, repeats, "stream", 1e-6)
        for name, value in medians.items():
            seconds.setdefault(name, []).append(value)
        for name in ("stream", "resident, new array"):
            growth, _ = peak_rss_growth(calls[name])
            rss.setdefault(name, []).append(growth / 1e6)
    row_bytes = SCALE_SIZES[0] * 4
    switch = budget_bytes(one_pass=True) // row_bytes
    mark = [(switch, f'"auto": stream above {switch:,} rows')]
    notes = [
        f'infeed="auto" keeps predict and evaluate arrays resident up to '
        f"{budget_bytes(one_pass=True) / 2**20:.0f} MiB on a CPU ({switch:,} rows of "
        f"{SCALE_SIZES[0]} float32 here), training arrays up to an eighth of the free RAM "
        f"({budget_bytes() / 2**30:.1f} GiB on this machine now).",
    ]
    model = "-".join(map(str, SCALE_SIZES))
    common = {"x_label": "rows", "x": sizes, "log_x": True, "marks": mark}
    return [
        Scaling(
            "infeed",
            f"predict seconds, resident against streamed infeed, MLP {model}, batch {BATCH:,}",
            unit="s/call",
            series=seconds,
            notes=notes,
            log_y=True,
            **common,
        ),
        Scaling(
            "infeed-rss",
            "peak RSS growth of one predict call, resident (new array) against streamed",
            unit="MB",
            series=rss,
            notes=["the peak resident memory (VmHWM) above the call's start, from /proc."],
            **common,
        ),
    ]
