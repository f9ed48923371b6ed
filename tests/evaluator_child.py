"""A training job or an evaluator job on one model_dir, for tests/model_dir/test_evaluator.py.

Run as `python evaluator_child.py train MODEL_DIR` (trains to `LAST_STEP`, a
checkpoint every `SAVE_EVERY` steps, all of them kept) or `python
evaluator_child.py evaluate MODEL_DIR OUT.json` (evaluates each new
checkpoint until `LAST_STEP`, then writes what it yielded to OUT.json). With
`evaluate-worker` instead of `evaluate`, it is one worker of an evaluator under
`MultiWorkerMirroredStrategy` (its `TF_CONFIG` set by the test), exporting the
latest evaluation to MODEL_DIR/latest and writing what it yielded and whether
it is the chief; with `evaluate-worker-dies`, worker 1 exits after its first
evaluation and worker 0 records the error it gets.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

from conftest import compile_args, tiny_data, tiny_model  # noqa: E402

import tpufit  # noqa: E402

LAST_STEP, SAVE_EVERY = 16, 4
X, Y = tiny_data(96)
XV, YV = tiny_data(40, seed=1)  # as test_evaluator's


class Pace(tpufit.Hook):
    """Leaves the evaluator time to see several checkpoints (no result depends on it)."""

    def after_run(self, ctx, values):
        time.sleep(0.3)


def train(model_dir: str) -> None:
    config = tpufit.RunConfig(save_checkpoints_steps=SAVE_EVERY, keep_checkpoint_max=0)
    tm = tpufit.TPUModel(tiny_model(), iterations_per_loop=2, model_dir=model_dir, config=config)
    tm.compile(**compile_args())
    tm.fit(X, Y, batch_size=16, max_steps=LAST_STEP, verbose=0, hooks=[Pace()])


def evaluate(model_dir: str, out: str) -> None:
    tm = tpufit.TPUModel(tiny_model(seed=1), iterations_per_loop=2)
    tm.compile(**compile_args())
    seen = list(
        tpufit.evaluate_checkpoints(tm, model_dir, (XV, YV), until_step=LAST_STEP, timeout_secs=50)
    )
    with open(out, "w") as file:
        json.dump(seen, file)


def evaluate_as_worker(model_dir: str, out: str, die: bool = False) -> None:
    config = tpufit.RunConfig(cluster_connect_timeout_secs=60)
    strategy = tpufit.cluster.multi_worker_strategy(config)  # first, before other TF work
    with strategy.scope():
        model = tiny_model(seed=1)
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=2, config=config)
    tm.compile(**compile_args())
    latest = tpufit.LatestExporter(os.path.join(model_dir, "latest"))
    results = tpufit.evaluate_checkpoints(
        tm, model_dir, (XV, YV), until_step=LAST_STEP, timeout_secs=50, exporters=[latest]
    )
    seen = []
    try:
        for result in results:
            seen.append(result)
            if die and not tpufit.cluster.is_chief(strategy):
                os._exit(3)  # a lost worker, after its first evaluation
    except tpufit.WorkerLostError as error:
        seen.append({"error": str(error)})
    with open(out, "w") as file:
        json.dump({"seen": seen, "is_chief": tpufit.cluster.is_chief(strategy)}, file)


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2])
    elif sys.argv[1] == "evaluate":
        evaluate(sys.argv[2], sys.argv[3])
    else:
        evaluate_as_worker(sys.argv[2], sys.argv[3], die=sys.argv[1] == "evaluate-worker-dies")
