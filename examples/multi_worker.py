"""Train on several workers with `MultiWorkerMirroredStrategy`, all started on this machine.

`python examples/multi_worker.py --workers 2` starts two worker processes, each with
its own `TF_CONFIG` naming free ports on 127.0.0.1, exactly as two machines would be
started (see docs/scale-out.md). Every worker runs `work()`: the same arrays, the
same `fit`, `evaluate` and `predict`; `batch_size` is the global batch, split over
the workers. Only the chief (worker 0) shows progress. At the end this launcher
prints both workers' results, which agree: the same weights and the same metrics.

Run:  python examples/multi_worker.py --workers 2            (about a minute on two CPU cores)
      python examples/multi_worker.py --workers 2 --smoke    (a few steps: checks that it runs)
Needs no download (scikit-learn's bundled digits).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

TIMEOUT = 600  # seconds for the whole job: a worker that never finishes is ended, not waited on


def free_ports(count: int) -> list[int]:
    """Returns `count` ports on 127.0.0.1 that were free a moment ago.

    Args:
        count: how many.
    """
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(workers: int, smoke: bool) -> int:
    """Starts the workers, waits for all of them, prints their results.

    Args:
        workers: how many worker processes.
        smoke: pass `--smoke` on to the workers.
    """
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    with tempfile.TemporaryDirectory() as tmp:
        processes = []
        for index in range(workers):
            tf_config = {
                "cluster": {"worker": addresses},
                "task": {"type": "worker", "index": index},
            }
            command = [sys.executable, __file__, "--result", str(Path(tmp) / f"{index}.json")]
            processes.append(
                subprocess.Popen(
                    command + (["--smoke"] if smoke else []),
                    env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)),
                )
            )
        # A worker whose peers are gone would wait for them: end them all at the first failure.
        deadline = time.monotonic() + TIMEOUT
        while any(p.poll() is None for p in processes):
            failed = any(p.poll() not in (None, 0) for p in processes)
            if failed or time.monotonic() > deadline:
                for p in processes:
                    if p.poll() is None:
                        p.kill()
                break
            time.sleep(0.2)
        codes = [p.wait() for p in processes]
        if any(codes):
            print(f"FAIL: worker exit codes {codes}", file=sys.stderr)
            return 1
        results = [json.loads((Path(tmp) / f"{i}.json").read_text()) for i in range(workers)]

    for index, result in enumerate(results):
        role = " (chief)" if result["is_chief"] else ""
        print(
            f"worker {index}{role}: {result['replicas']} replicas in sync, global step "
            f"{result['global_step']}, test accuracy {result['accuracy']:.4f}, "
            f"{result['predicted_rows']} rows predicted, weights checksum {result['checksum']:.6f}"
        )
    keys = ("global_step", "accuracy", "checksum", "predicted_rows")
    if any(r[key] != results[0][key] for r in results for key in keys):
        print("FAIL: the workers disagree", file=sys.stderr)
        return 1
    print(
        f"multi-worker: {workers} workers agree: global step {results[0]['global_step']}, "
        f"test accuracy {results[0]['accuracy']:.4f}"
    )
    return 0


def work(result_file: str, smoke: bool) -> int:
    """One worker: trains, evaluates and predicts, writes its results to `result_file`.

    Args:
        result_file: where this worker writes its results (JSON).
        smoke: train a few steps only.
    """
    import tpufit

    # The strategy must exist before TensorFlow does anything else in this process; tpufit's
    # waits a bounded time for the other workers and lets Ctrl-C and SIGTERM end the wait.
    strategy = tpufit.cluster.multi_worker_strategy(
        tpufit.RunConfig(cluster_connect_timeout_secs=120)
    )

    import keras
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(0)  # the same initial weights on every worker
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    if smoke:
        x_train, y_train = x_train[:256], y_train[:256]

    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(128, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
    tm = tpufit.TPUModel(model, strategy=strategy, iterations_per_loop=10)
    tm.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # Arrays are the same on every worker; each feeds its share of every global batch.
    tm.fit(x_train, y_train, batch_size=64, epochs=1 if smoke else 20, verbose=0 if smoke else 2)
    scores = tm.evaluate(x_test, y_test, batch_size=128, return_dict=True, verbose=0)
    logits = tm.predict(x_test, batch_size=128, verbose=0)  # every row, in order, on every worker

    Path(result_file).write_text(
        json.dumps(
            {
                "is_chief": tpufit.cluster.is_chief(strategy),
                "replicas": strategy.num_replicas_in_sync,
                "global_step": tm.global_step,
                "accuracy": float(scores["accuracy"]),
                "predicted_rows": len(logits),
                "checksum": float(sum(np.abs(w).sum() for w in model.get_weights())),
            }
        )
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start")
    parser.add_argument("--smoke", action="store_true", help="train a few steps only")
    parser.add_argument("--result", help=argparse.SUPPRESS)  # set by the launcher for a worker
    args = parser.parse_args()
    if args.result:
        return work(args.result, args.smoke)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, received {args.workers}")
    return launch(args.workers, args.smoke)


if __name__ == "__main__":
    sys.exit(main())
