"""`tpufit.evaluate_checkpoints`: the evaluator job beside a training job (TPUEstimator's).

It looks for a new checkpoint in a `model_dir` every half second, in the
`checkpoint` state file, as `tf.train.checkpoints_iterator` does: that file
names a checkpoint only once its files are complete (see
`tpufit.model_dir.checkpoint`), so a half-written one is never read. Each
checkpoint is restored as a `TPUModel` on that directory restores it
(`ModelDir`, with its shape checks and `IncompatibleCheckpointError`), then
evaluated exactly (`Evaluations`). An evaluator slower than the training
evaluates the newest checkpoint each time, skipping those in between.

Under a `MultiWorkerMirroredStrategy` the evaluator is several workers, each
running this same generator: at every look, the first worker's answer (which
checkpoint, or that the time is up) is broadcast to all, so every worker
restores the same checkpoint, evaluates its share of the data in the same
collective evaluation, and stops at the same point. Only the chief writes the
eval summaries and exports.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tpufit import cluster, errors
from tpufit.model_dir import checkpoint
from tpufit.model_dir.directory import ModelDir
from tpufit.model_dir.exporters import Exporter
from tpufit.model_dir.summaries import EvalSummaryWriter
from tpufit.run import failures
from tpufit.run.evaluations import (
    Evaluations,
    check_data_pair,
    check_exporters,
    check_tpu_model,
)

if TYPE_CHECKING:
    from tpufit.model import TPUModel

logger = logging.getLogger("tpufit")

DEFAULT_TIMEOUT_SECS = 600.0
_POLL_SECS = 0.5  # between two looks at the directory's checkpoint state file


def evaluate_checkpoints(
    tm: TPUModel,
    model_dir: str | os.PathLike,
    data: Any,
    *,
    steps: int | None = None,
    until_step: int | None = None,
    timeout_secs: float | None = DEFAULT_TIMEOUT_SECS,
    exporters: tuple[Exporter, ...] | list[Exporter] = (),
) -> Iterator[dict[str, Any]]:
    """Evaluates every new checkpoint of `model_dir` as it appears; yields the results.

    For each new checkpoint: restores its weights into `tm`, evaluates
    `data` exactly (as `tm.evaluate`), writes the metrics to
    `<model_dir>/eval` at the checkpoint's global step, hands them to the
    exporters, and yields `{"global_step": ..., **metrics}`. It ends after a
    checkpoint at `until_step` or later, or when no new checkpoint appears
    within `timeout_secs` (`None`: waits for ever); ending without having
    found any checkpoint, it warns. The arguments are checked at the call;
    the waiting starts at the first `next`.

    Under a `MultiWorkerMirroredStrategy`, run it on every worker of the
    evaluator and iterate to the end on each: the first worker decides
    which checkpoint all evaluate and when all stop; every worker yields the
    same global metrics; only the chief writes summaries and exports.

    Args:
        tm: A compiled `tpufit.TPUModel` of the model being trained.
        model_dir: The training job's `model_dir`.
        data: As `fit`'s `validation_data`.
        steps: Steps of each evaluation, or `None` for all of `data`.
        until_step: The global step after which to stop, or `None`.
        timeout_secs: Seconds to wait for each new checkpoint.
        exporters: `tpufit.BestExporter` / `tpufit.LatestExporter`s.

    Returns:
        An iterator of the evaluations, one per checkpoint evaluated.

    Raises:
        IncompatibleCheckpointError: A checkpoint's weights do not fit `tm`'s model.
    """
    check_tpu_model(tm, "evaluate_checkpoints")
    if not isinstance(model_dir, (str, os.PathLike)):
        raise errors.invalid_type("model_dir", model_dir, "a directory path (str or os.PathLike)")
    errors.check_positive_int("steps", steps, allow_none=True)
    errors.check_positive_int("until_step", until_step, allow_none=True)
    if timeout_secs is not None and (
        not isinstance(timeout_secs, (int, float, np.integer, np.floating))
        or isinstance(timeout_secs, bool)
        or timeout_secs < 0
    ):
        raise errors.invalid_argument("timeout_secs", timeout_secs, "a non-negative number or None")
    exporters = check_exporters(exporters)
    check_data_pair("data", data)
    directory = os.path.abspath(os.fspath(model_dir))
    summaries = EvalSummaryWriter(directory, tm.strategy)  # opened at the first evaluation
    evaluations = Evaluations(
        tm,
        data,
        steps=steps,
        batch_size=None,
        exporters=exporters,
        summaries=summaries,
        prepare=True,
    )
    return _each_checkpoint(tm, directory, evaluations, summaries, until_step, timeout_secs)


def _each_checkpoint(
    tm: TPUModel,
    directory: str,
    evaluations: Evaluations,
    summaries: EvalSummaryWriter,
    until_step: int | None,
    timeout_secs: float | None,
) -> Iterator[dict[str, Any]]:
    strategy = tm.strategy
    seen = None  # the number of the newest checkpoint evaluated or found gone
    try:
        while True:
            path = _next_checkpoint(strategy, directory, seen, timeout_secs)
            if path is None:
                break
            seen = checkpoint.step_of(path)
            restored = _restored(tm, directory, path)
            with failures.translating(strategy, "evaluate_checkpoints"):  # a lost worker
                if cluster.on_any_worker(strategy, not restored):
                    continue  # Deleted (keep_checkpoint_max) while read: a newer one is listed.
            step = tm.global_step
            logs = evaluations.evaluate(step)
            yield {"global_step": step, **logs}
            if until_step is not None and step >= until_step:
                return
    finally:
        summaries.close()
    if evaluations.last_step is None:
        errors.warn(
            f"tpufit: no checkpoint appeared in {directory} within timeout_secs="
            f"{timeout_secs}; evaluate_checkpoints ends without evaluating."
        )
    else:
        logger.info(
            "No new checkpoint in %s within %s s; the evaluator ends after global step %d.",
            directory,
            timeout_secs,
            evaluations.last_step,
        )


def _next_checkpoint(
    strategy: tf.distribute.Strategy,
    directory: str,
    last: int | None,
    timeout_secs: float | None,
) -> str | None:
    """Waits for a checkpoint numbered above `last`; returns its prefix, or `None` at the timeout.

    Under several workers, the first one's view of the directory and of its
    clock decides for all (`cluster.from_first_worker`, once per look): every
    worker then restores the checkpoint of that number, and all stop together.
    """
    deadline = None if timeout_secs is None else time.monotonic() + timeout_secs
    while True:
        newest = checkpoint.latest(directory)
        number = -1 if newest is None else checkpoint.step_of(newest)
        if last is not None and number <= last:
            number = -1
        late = number < 0 and deadline is not None and time.monotonic() >= deadline
        with failures.translating(strategy, "evaluate_checkpoints"):  # a lost worker
            number, late = cluster.from_first_worker(strategy, [number, int(late)])
        if number >= 0:
            if newest is not None and checkpoint.step_of(newest) == number:
                return newest
            return checkpoint.at_step(directory, number)  # newer here: the first worker's one
        if late:
            return None
        time.sleep(_POLL_SECS)


def _restored(tm: TPUModel, directory: str, path: str) -> bool:
    """Restores the checkpoint at `path` into `tm`; whether it was still there to read."""
    config = tm.config.replace(model_dir=directory, warm_start_from=None)
    try:
        ModelDir(config, tm._progress, tm._replicas, restore_from=path).restore()
    except tf.errors.NotFoundError:
        return False
    return True
