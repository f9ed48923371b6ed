"""TensorFlow errors that have a clearer tpufit meaning, re-raised as that.

Two kinds reach the host as a TensorFlow `OpError` from inside a device loop:

- a `tpufit` error raised while the infeed reads a Python source (a generator
  or `PyDataset` that changes what it yields):
  `tf.data` wraps it, and it is re-raised as it was (the infeed keeps what
  its sources raised, for this run only);
- a collective that failed because another worker of a
  `MultiWorkerMirroredStrategy` died or stopped answering: re-raised as
  `WorkerLostError` naming that worker (task and address from the cluster).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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


def pipeline_error(error: tf.errors.OpError, feeds: Sequence[Any]) -> errors.TPUFitError | None:
    """Returns the tpufit error that one of `feeds`' Python sources raised as `error`."""
    for feed in feeds:
        for raised in reversed(feed.pipeline_errors):
            if str(raised).splitlines()[0] in error.message:
                return raised
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


@contextlib.contextmanager
def translating(
    strategy: tf.distribute.Strategy, during: str, feeds: Sequence[Any] = ()
) -> Iterator[None]:
    """Re-raises, inside the block, these TensorFlow errors as tpufit's.

    Args:
        strategy: The run's strategy (a lost worker is named from its cluster).
        during: The run's method, for the message ("fit", "evaluate", "predict").
        feeds: The run's infeeds, whose `pipeline_errors` hold what their
            Python sources raised inside `tf.data`.
    """
    try:
        yield
    except tf.errors.OpError as error:
        clearer = pipeline_error(error, feeds) or worker_lost(error, strategy, during)
        if clearer is None:
            raise
        raise clearer from error
