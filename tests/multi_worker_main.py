"""One worker of the two-worker tests in test_multi_worker.py (run as a script, not collected).

Usage: `TF_CONFIG=... python multi_worker_main.py OUT_DIR MODE [TIMEOUT]` with MODE
"run" (fit, evaluate and predict on every input kind, results saved to OUT_DIR),
"die" (worker 1 exits in the middle of `fit`; worker 0, with a `model_dir`,
reports what it got) or "train" (fit until stopped). TIMEOUT is the
`cluster_connect_timeout_secs` the workers wait for each other.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from conftest import compile_args, tiny_data, tiny_model

import tpufit
from tpufit import cluster

ROWS, BATCH = 100, 16
STRATEGY: tf.distribute.MultiWorkerMirroredStrategy  # made first in __main__


def compiled(model_dir: Path | None = None) -> tpufit.TPUModel:
    with STRATEGY.scope():
        model = tiny_model()
    tm = tpufit.TPUModel(model, strategy=STRATEGY, iterations_per_loop=3, model_dir=model_dir)
    tm.compile(**compile_args())
    return tm


def run(out: Path, index: int) -> None:
    x, y = tiny_data(ROWS)
    tm = compiled()
    tm.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=1)
    results = {f"weight_{i}": w for i, w in enumerate(tm.model.get_weights())}
    results["predict_arrays"] = tm.predict(x[:77], batch_size=BATCH, verbose=0)
    logs = tm.evaluate(x[:77], y[:77], batch_size=BATCH, return_dict=True, verbose=0)
    unknown_length = (
        tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b != 2).batch(BATCH)
    )
    dataset_logs = tm.evaluate(unknown_length, return_dict=True, verbose=0)
    results["predict_dataset"] = tm.predict(unknown_length.map(lambda a, b: a), verbose=0)
    results["predict_generator"] = tm.predict(
        ((x[i : min(i + 10, 77)],) for i in range(0, 77, 10)), batch_size=BATCH, verbose=0
    )

    # A dataset reading files: training shards the files over the workers,
    # evaluation shards by batch so that it stays exact.
    files = []
    for part, rows in enumerate((slice(0, 60), slice(60, 100))):
        files.append(str(out / f"part{part}-of-worker{index}.csv"))
        lines = [
            ",".join(map(str, [*features, label]))
            for features, label in zip(x[rows], y[rows], strict=True)
        ]
        Path(files[-1]).write_text("\n".join(lines) + "\n")

    def parse(line):
        values = tf.io.decode_csv(line, [[0.0]] * 6 + [[0]])
        return tf.stack(values[:6]), values[6]

    from_files = tf.data.TextLineDataset(files).map(parse).batch(BATCH)
    file_model = compiled()
    file_model.fit(from_files, epochs=1, verbose=0)
    results.update({f"files_weight_{i}": w for i, w in enumerate(file_model.model.get_weights())})
    files_logs = file_model.evaluate(from_files, return_dict=True, verbose=0)

    contexts = []

    def input_fn(ctx):
        contexts.append(ctx)
        dataset = ctx.shard(tf.data.Dataset.from_tensor_slices((x, y)).repeat())
        return dataset.batch(ctx.per_replica_batch_size)

    tm.fit(input_fn, batch_size=BATCH, steps_per_epoch=4, epochs=1, verbose=0)
    input_fn_logs = tm.evaluate(input_fn, batch_size=BATCH, steps=3, return_dict=True, verbose=0)
    results.update({f"input_fn_weight_{i}": w for i, w in enumerate(tm.model.get_weights())})

    with cluster.writing_dir(out / "model_dir", STRATEGY) as path:
        Path(path, f"written_by_{index}.txt").write_text("x")
    np.savez(out / f"worker{index}.npz", **results)
    (out / f"worker{index}.json").write_text(
        json.dumps(
            {
                "evaluate_arrays": logs,
                "evaluate_dataset": dataset_logs,
                "evaluate_input_fn": input_fn_logs,
                "evaluate_files": files_logs,
                "is_chief": cluster.is_chief(STRATEGY),
                "writing_dir": path,
                "contexts": [vars(c) for c in contexts],
                "global_step": tm.global_step,
            }
        )
    )


class DieAfterFirstEpoch(keras.callbacks.Callback):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def on_epoch_end(self, epoch, logs=None):
        if self.index == 1:
            print("worker 1 exits now", flush=True)
            os._exit(3)


def die(out: Path, index: int) -> None:
    x, y = tiny_data(ROWS)
    tm = compiled(out / "model_dir")
    started = time.monotonic()
    try:
        tm.fit(x, y, batch_size=BATCH, epochs=50, verbose=0, callbacks=[DieAfterFirstEpoch(index)])
    except tpufit.WorkerLostError as error:
        seconds = time.monotonic() - started
        (out / f"worker{index}.json").write_text(
            json.dumps({"error": str(error), "seconds": seconds})
        )
        print(f"WorkerLostError after {seconds:.1f}s: {error}", flush=True)
        sys.exit(4)


class Started(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            print("training", flush=True)


def train(out: Path, index: int) -> None:
    x, y = tiny_data(ROWS)
    compiled().fit(x, y, batch_size=BATCH, epochs=100_000, verbose=0, callbacks=[Started()])


if __name__ == "__main__":
    task_index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60
    print("connecting", flush=True)
    # The strategy must exist before TensorFlow does anything else.
    STRATEGY = cluster.multi_worker_strategy(tpufit.RunConfig(cluster_connect_timeout_secs=timeout))
    {"run": run, "die": die, "train": train}[sys.argv[2]](Path(sys.argv[1]), task_index)
