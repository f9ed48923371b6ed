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
from tpufit.model_dir import checkpoint

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


def resume_advice(model_dir: str | None, strategy: tf.distribute.Strategy | None) -> str:
    """Says where a restarted job would begin: the newest checkpoint of `model_dir`, or none.

    Args:
        model_dir: The run's `model_dir`, or `None`.
        strategy: The run's strategy: on a worker other than the chief, no
            checkpoint on its machine may mean the chief's are elsewhere.

    Returns:
        One sentence, for an error message.

    Example:
        >>> resume_advice("runs/a", None)
        'Restart the job on every worker; it resumes from runs/a/ckpt-3, the newest ...'
    """
    restart = "Restart the job on every worker; it"
    if model_dir is None:
        return f"{restart} begins from the start (no model_dir, so no checkpoint)."
    newest = checkpoint.latest(model_dir)
    if newest is not None:
        return f"{restart} resumes from {newest}, the newest checkpoint in model_dir."
    where = "" if cluster.is_chief(strategy) else " on this machine (the chief writes them)"
    return f"{restart} begins from the start: no checkpoint in {model_dir}{where} yet."


def worker_lost(
    error: tf.errors.OpError,
    strategy: tf.distribute.Strategy,
    during: str,
    model_dir: str | None = None,
) -> errors.WorkerLostError | None:
    """Returns the `WorkerLostError` that `error` means under `strategy`, or `None`.

    Args:
        error: What TensorFlow raised.
        strategy: The run's strategy.
        during: The run's method, for the message.
        model_dir: The run's `model_dir`, whose newest checkpoint the message names.
    """
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
        f"complete. {resume_advice(model_dir, strategy)} "
        f"TensorFlow reported: {type(error).__name__}: {said}"
    )


@contextlib.contextmanager
def translating(
    strategy: tf.distribute.Strategy,
    during: str,
    feeds: Sequence[Any] = (),
    model_dir: str | None = None,
) -> Iterator[None]:
    """Re-raises, inside the block, these TensorFlow errors as tpufit's.

    Args:
        strategy: The run's strategy (a lost worker is named from its cluster).
        during: The run's method, for the message ("fit", "evaluate", "predict").
        feeds: The run's infeeds, whose `pipeline_errors` hold what their
            Python sources raised inside `tf.data`.
        model_dir: The run's `model_dir`, named with its newest checkpoint
            when a lost worker means a restart.
    """
    try:
        yield
    except tf.errors.OpError as error:
        clearer = pipeline_error(error, feeds) or worker_lost(error, strategy, during, model_dir)
        if clearer is None:
            raise
        raise clearer from error
