"""Several workers: who is who, who writes files, and naming a worker that was lost.

Every worker of a `MultiWorkerMirroredStrategy` runs the same program; only
the chief (task `chief:0`, else `worker:0`) should write checkpoints and
summaries and show progress. The others write where they must into a
temporary directory that is removed afterwards, as Keras's multi-worker
callbacks do.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

import tensorflow as tf

_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def _resolver(strategy: tf.distribute.Strategy | None):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return strategy.cluster_resolver
    return None


def _workers(cluster: dict) -> list[tuple[str, int, str]]:
    """`(job, index, address)` of every task that runs replicas: the chief, then the workers."""
    tasks = []
    for job in ("chief", "worker"):
        addresses = cluster.get(job, [])
        if isinstance(addresses, dict):
            addresses = [addresses[k] for k in sorted(addresses, key=int)]
        tasks += [(job, i, address) for i, address in enumerate(addresses)]
    return tasks


def _cluster(strategy: tf.distribute.Strategy | None) -> tuple[dict, str | None, int]:
    resolver = _resolver(strategy)
    if resolver is not None:
        return resolver.cluster_spec().as_dict(), resolver.task_type, int(resolver.task_id or 0)
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    return config.get("cluster", {}), task.get("type"), int(task.get("index", 0))


def worker_count(strategy: tf.distribute.Strategy | None) -> int:
    """Number of workers (input pipelines) of `strategy`: 1 on one machine."""
    if _resolver(strategy) is None:
        return 1
    return max(1, len(_workers(_cluster(strategy)[0])))


def worker_index(strategy: tf.distribute.Strategy | None) -> int:
    """This worker's index among `worker_count` (the chief first): 0 on one machine."""
    if _resolver(strategy) is None:
        return 0
    cluster, task_type, task_id = _cluster(strategy)
    for position, (job, index, _) in enumerate(_workers(cluster)):
        if (job, index) == (task_type, task_id):
            return position
    return 0


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process is the one that writes files and shows progress.

    With a `MultiWorkerMirroredStrategy`, TensorFlow's own answer
    (`strategy.extended.should_checkpoint`); without a strategy, read from
    `TF_CONFIG` (task `chief:0`, or `worker:0` when there is no chief); on one
    machine, always.
    """
    if strategy is not None and _resolver(strategy) is not None:
        return bool(strategy.extended.should_checkpoint)
    cluster, task_type, task_id = _cluster(None)
    if not cluster or task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


@contextlib.contextmanager
def writing_dir(model_dir: str | os.PathLike, strategy: tf.distribute.Strategy) -> Iterator[str]:
    """Yields where this worker writes the files of `model_dir`.

    The chief writes into `model_dir` (created if missing). Every other worker gets a fresh
    temporary directory (its collective save must still write somewhere),
    removed when the block ends, so only the chief's files remain.

    Example:
        >>> with writing_dir("runs/a", tf.distribute.get_strategy()) as path:
        ...     path
        'runs/a'
    """
    if is_chief(strategy):
        os.makedirs(model_dir, exist_ok=True)
        yield os.fspath(model_dir)
        return
    path = tempfile.mkdtemp(prefix=f"tpufit-worker{worker_index(strategy)}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def describe_task(job: str, index: int, strategy: tf.distribute.Strategy | None) -> str:
    """Returns e.g. "worker 1 (127.0.0.1:2223)" for a task of the cluster."""
    cluster = _cluster(strategy)[0]
    for task_job, task_index, address in _workers(cluster):
        if (task_job, task_index) == (job, index):
            return f"{job} {index} ({address})"
    return f"{job} {index}"


def lost_tasks(message: str, strategy: tf.distribute.Strategy | None) -> list[str]:
    """Returns the tasks other than this one that a TensorFlow error message names."""
    _, own_type, own_id = _cluster(strategy)
    named = []
    for job, index in _TASK.findall(message):
        task = describe_task(job, int(index), strategy)
        if (job, int(index)) != (own_type, own_id) and task not in named:
            named.append(task)
    return named
