"""Several workers: joining the cluster, who is who, who writes files, naming a lost worker.

`multi_worker_strategy` creates the `MultiWorkerMirroredStrategy` once every
worker is up, or fails after a timeout naming the missing ones; a worker
waiting for its peers, or running, stops on Ctrl-C or SIGTERM.

Every worker of a `MultiWorkerMirroredStrategy` runs the same program; only
the chief (task `chief:0`, else `worker:0`) should write checkpoints and
summaries and show progress. The others write where they must into a
temporary directory that is removed afterwards, as Keras's multi-worker
callbacks do.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import tensorflow as tf

from tpufit import errors
from tpufit.config import RunConfig

_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")
_POLL_SECS = 0.25  # between two looks at the peers' ports
_PROBE_SECS = 1.0  # at most, for one look at one peer


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


def from_first_worker(strategy: tf.distribute.Strategy, values: list[int]) -> list[int]:
    """Returns the `values` of the worker holding replica 0 on every worker (a broadcast).

    Every worker of a `MultiWorkerMirroredStrategy` must call it at the same
    point, as any collective; elsewhere it returns `values` as they are.
    Workers that decide something on their own (which checkpoint, whether to
    stop) use it to take one decision, so that none waits alone in a collective.

    Args:
        strategy: The run's strategy.
        values: This worker's integers; only the first worker's are kept.
    """
    if _resolver(strategy) is None:
        return list(values)
    own = tf.constant(values, tf.int64)

    def share(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
        return own if context.replica_id_in_sync_group == 0 else tf.zeros_like(own)

    shares = strategy.experimental_distribute_values_from_function(share)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None).numpy().tolist()


def on_any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """Whether `flag` is true on any worker (each must call it at the same point).

    Args:
        strategy: The run's strategy.
        flag: This worker's flag.
    """
    if _resolver(strategy) is None:
        return bool(flag)
    shares = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(int(flag), tf.int64)
    )
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None).numpy() > 0)


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


def multi_worker_strategy(
    config: RunConfig | None = None,
) -> tf.distribute.MultiWorkerMirroredStrategy:
    """Creates the `MultiWorkerMirroredStrategy` of `TF_CONFIG` once every worker is up.

    Call it first, before other TensorFlow work, on every worker. Each waits
    until the port of every other worker (chief and workers) of `TF_CONFIG`'s
    cluster accepts connections, listening meanwhile on its own so the others
    see it; then TensorFlow connects them. Ctrl-C or SIGTERM stop the wait.
    Once connected, SIGTERM stops the worker at its next return to the host
    (TensorFlow's own SIGTERM handler would only log it), exiting with a
    message and status 1.

    Args:
        config: Its `cluster_connect_timeout_secs` bounds the wait; the
            default `RunConfig()`'s when `None`.

    Returns:
        The strategy (of one worker when `TF_CONFIG` names no cluster).

    Raises:
        ClusterConnectError: A worker did not come up in time (the message
            names each missing one and its address), or SIGTERM came first.

    Example:
        >>> strategy = tpufit.cluster.multi_worker_strategy(
        ...     tpufit.RunConfig(cluster_connect_timeout_secs=60))
    """
    if config is None:
        config = RunConfig()
    elif not isinstance(config, RunConfig):
        raise errors.invalid_type("config", config, "a tpufit.RunConfig or None")
    cluster, task_type, task_id = _cluster(None)
    tasks = _workers(cluster)
    own = [address for job, index, address in tasks if (job, index) == (task_type, task_id)]
    peers = [task for task in tasks if task[:2] != (task_type, task_id)]
    if peers:
        me = f"{task_type} {task_id}" + (f" at {own[0]}" if own else "")
        _wait_for(peers, own[0] if own else None, config.cluster_connect_timeout_secs, me)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if peers:
        _stop_on_sigterm(f"{task_type} {task_id}")
    return strategy


def _wait_for(peers: list, own: str | None, timeout: float, me: str) -> None:
    missing = list(peers)
    waiting = f"{me} was waiting for " + ", ".join(f"{j} {i} at {a}" for j, i, a in missing)
    with _listening(own) as listener, _sigterm_raises(waiting):
        deadline = time.monotonic() + timeout
        try:
            while True:
                missing = [task for task in missing if not _accepts(task[2])]
                if not missing:
                    return
                if time.monotonic() >= deadline:
                    break
                _accept_probes(listener)
                time.sleep(_POLL_SECS)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"{me} was waiting for {_names(missing)}") from None
    raise errors.ClusterConnectError(
        f"{_names(missing)} did not connect within {timeout:g} s ({me}; cluster from "
        "TF_CONFIG). Start every worker of the cluster with its own TF_CONFIG, check "
        "that their ports are open between the machines, or wait longer with "
        "RunConfig(cluster_connect_timeout_secs=...)."
    )


def _names(tasks: list) -> str:
    return ", ".join(f"{job} {index} at {address}" for job, index, address in tasks)


def _port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _accepts(address: str) -> bool:
    try:
        socket.create_connection(_port(address), timeout=_PROBE_SECS).close()
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _listening(address: str | None) -> Iterator[socket.socket | None]:
    """Listens on this worker's port while it waits, so the others see it is up.

    Closed before TensorFlow's server takes the port; a peer looking in
    between retries. A port that cannot be bound is left for TensorFlow to report.
    """
    listener = None
    if address is not None:
        try:
            listener = socket.create_server(("", _port(address)[1]), reuse_port=False)
            listener.setblocking(False)
        except (OSError, ValueError):
            listener = None
    try:
        yield listener
    finally:
        if listener is not None:
            listener.close()


def _accept_probes(listener: socket.socket | None) -> None:
    # Accepted and closed at once: a full backlog would make the peers' looks time out.
    while listener is not None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        connection.close()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigterm_raises(waiting: str) -> Iterator[None]:
    if not _in_main_thread():
        yield
        return

    def stop(signum, frame):
        raise errors.ClusterConnectError(f"Stopped by SIGTERM: {waiting}.")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm(me: str) -> None:
    """Makes SIGTERM end this worker, replacing TensorFlow's handler, which only logs it."""
    if not _in_main_thread():
        return

    def stop(signum, frame):
        print(f"tpufit: {me} stopped by SIGTERM.", file=sys.stderr, flush=True)
        # The exit unwinds the user's code first (finally blocks run); then, as
        # the first exit handler, ends the process before TensorFlow's
        # teardown, which can crash while a peer still calls in.
        atexit.register(_exit_now, 1)
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, stop)


def _exit_now(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
