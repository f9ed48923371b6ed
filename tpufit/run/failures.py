"""TensorFlow errors that have a clearer tpufit meaning, re-raised as that.

Two kinds reach the host as a TensorFlow `OpError` from inside a device loop:

- a `tpufit` error raised while the infeed reads a Python source (a generator
  that changes what it yields, or runs out before `steps_per_epoch`):
  `tf.data` wraps it, and it is re-raised as it was;
- a collective that failed because another worker of a
  `MultiWorkerMirroredStrategy` died or stopped answering: re-raised as
  `WorkerLostError` naming that worker (task and address from the cluster).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tpufit import cluster, errors

_PENDING: collections.deque = collections.deque(maxlen=8)
_PEER_FAILURES = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.InternalError,
    tf.errors.UnknownError,
)


def raised_in_pipeline(error: errors.TPUFitError) -> errors.TPUFitError:
    """Remembers an error raised inside `tf.data`, to re-raise it unwrapped; returns it."""
    _PENDING.append(error)
    return error


def _pipeline_error(error: tf.errors.OpError) -> errors.TPUFitError | None:
    for pending in reversed(_PENDING):
        if str(pending).splitlines()[0] in error.message:
            _PENDING.clear()
            return pending
    return None


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
            clearer = _pipeline_error(error) or worker_lost(error, self.strategy, method.__name__)
            if clearer is None:
                raise
            raise clearer from error

    return wrapper
