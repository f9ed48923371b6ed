"""TensorFlow errors that have a clearer tpufit meaning, re-raised as that.

A collective that failed because another worker of a
`MultiWorkerMirroredStrategy` died or stopped answering reaches the host as a
TensorFlow `OpError` from inside a device loop: it is re-raised as
`WorkerLostError` naming that worker (task and address from the cluster).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tpufit import cluster, errors

_PEER_FAILURES = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.InternalError,
    tf.errors.UnknownError,
)


def worker_lost(
    error: tf.errors.OpError, strategy: tf.distribute.Strategy, during: str
) -> errors.WorkerLostError | None:
    """Returns the `WorkerLostError` that `error` means under `strategy`, or `None`."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    if not isinstance(error, _PEER_FAILURES) or cluster.worker_count(strategy) < 2:
        return None
    lost = cluster.lost_tasks(error.message, strategy)
    own = cluster.worker_index(strategy)
    who = ", ".join(lost) if lost else "another worker of the cluster"
    said = error.message.strip().splitlines()[0][:400]
    return errors.WorkerLostError(
        f"Lost {who} during `{during}` on worker {own}: a collective step could not "
        f"complete. Restart the job on every worker (it resumes from the last "
        f"checkpoint in model_dir, if any). TensorFlow reported: {type(error).__name__}: {said}"
    )


def translated(method: Callable) -> Callable:
    """Decorates a `TPUModel` method so that these TensorFlow errors come out as tpufit's."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except tf.errors.OpError as error:
            clearer = worker_lost(error, self.strategy, method.__name__)
            if clearer is None:
                raise
            raise clearer from error

    return wrapper
