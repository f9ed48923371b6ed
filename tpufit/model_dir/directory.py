"""`ModelDir`: what a `TPUModel` does with its `model_dir` — check, restore, resume, save.

A new `TPUModel` on a `model_dir` that holds a checkpoint restores it in parts,
each as soon as its variables exist and before any training: the training
state (global step, epoch) at once; the weights and random-seed states once
the model is built (at once for a built model, else at its first run); the
optimizer state once the optimizer is built (at the first `fit` at the
latest). Without a checkpoint, `RunConfig.warm_start_from` initialises the
weights instead. Every check runs before anything is assigned or written.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import keras

from tpufit import errors
from tpufit.config import RunConfig
from tpufit.device.replicas import Replicas
from tpufit.model_dir import checkpoint, warm_start
from tpufit.model_dir.saving_hook import CheckpointHook
from tpufit.model_dir.summaries import EvalSummaryHook, EvalSummaryWriter, summary_hooks


def check_model_dir(path: Any) -> str:
    """Returns `path` as a string if tpufit can write checkpoints there; touches nothing.

    A missing directory is fine when its nearest existing parent is a
    writable directory (it is created at the first checkpoint or summary).

    Raises:
        InvalidArgumentError: `path` is a file, or a directory (or its parent)
            that cannot be written.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise errors.invalid_argument(
            "model_dir",
            path,
            "a directory (or a path to create one at)",
            what="model_dir is a file",
        )
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not _writable(existing):
        what = "model_dir" if existing == path else f"model_dir's parent {existing}"
        raise errors.invalid_argument(
            "model_dir",
            path,
            "a directory this process may write into (check its permissions)",
            what=f"Cannot write checkpoints: {what} is not writable",
        )
    return path


def _writable(directory: str) -> bool:
    # A directory with no write bit at all is read-only on purpose, even to root.
    mode = os.stat(directory).st_mode
    return os.access(directory, os.W_OK | os.X_OK) and bool(
        mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    )


def model_groups(model: keras.Model, optimizers: list) -> dict[str, list]:
    """Returns the variable lists a checkpoint holds (`checkpoint`'s layout).

    Optimizers that have not created their variables yet are left out.
    """
    weights = list(model.weights)
    skip = {id(v) for v in weights} | {id(v) for v in model.metrics_variables}
    return {
        "weights": weights,
        "rng": [v for v in model.variables if id(v) not in skip],
        "optimizers": [list(o.variables) for o in optimizers if o.built],
    }


class ModelDir:
    """The checkpoints of one `TPUModel`: restore once, resume, and the hook that saves.

    Args:
        config: The model's `RunConfig`.
        progress: The model's `tpufit.run.progress.Progress` (saved and restored with the weights).
        replicas: The model as the strategy runs it.
        restore_from: The checkpoint (prefix) to restore, instead of the
            newest in `model_dir` (an evaluator's workers restore the one they agreed on).
    """

    def __init__(
        self,
        config: RunConfig,
        progress: Any,
        replicas: Replicas,
        *,
        restore_from: str | None = None,
    ) -> None:
        self.path = None if config.model_dir is None else check_model_dir(config.model_dir)
        self._config = config
        self._progress = progress
        self._replicas = replicas
        self.restored_from = restore_from
        if restore_from is None and self.path is not None:
            self.restored_from = checkpoint.latest(self.path)
        self._reader: checkpoint.Reader | None = None
        self._pending: set[str] = set()
        self._warm: warm_start.WarmStartSettings | None = None
        self._saver = None
        self._eval_summaries: EvalSummaryWriter | None = None
        if self.path is not None:
            self._saver = checkpoint.Saver(
                self.path,
                lambda: model_groups(replicas.replica_model, replicas.optimizers),
                progress,
                replicas.strategy,
                max_to_keep=config.keep_checkpoint_max,
                keep_every_n_hours=config.keep_checkpoint_every_n_hours,
            )
        if self.restored_from is not None:
            self._reader = checkpoint.Reader(self.restored_from)
            if self._reader.state() is None:
                raise self._incompatible("it was not written by tpufit (no training state)")
            self._pending = {"state", "weights", "optimizers"}
            self._saver.last_saved_step = self._reader.state()["global_step"]
        elif config.warm_start_from is not None:
            self._warm = warm_start.settings(config.warm_start_from)
            warm_start.find_checkpoint(self._warm)  # Fails now if there is nothing to start from.

    def restore(self) -> bool:
        """Restores every part whose variables exist now and that is not restored yet.

        Restored weights are copied to the user's model (when the replicas run a clone).

        Returns:
            Whether the model's weights changed.

        Raises:
            IncompatibleCheckpointError: The checkpoint's weights differ from
                the model's in number, shape or dtype; nothing was assigned.
        """
        model = self._replicas.replica_model
        changed = False
        if "state" in self._pending:
            self._pending.discard("state")
            self._progress.assign(self._reader.state())
        if "weights" in self._pending and model.built:
            groups = model_groups(model, [])
            problem = self._reader.mismatch(("weights",), groups["weights"])
            if problem:
                raise self._incompatible(f"its weights differ from this model's: {problem}")
            self._reader.assign(("weights",), groups["weights"])
            if self._reader.mismatch(("rng",), groups["rng"]) is None:
                self._reader.assign(("rng",), groups["rng"])
            self._pending.discard("weights")
            changed = True
        if "optimizers" in self._pending:
            optimizers = self._replicas.optimizers
            if optimizers and all(o.built for o in optimizers):
                self._restore_optimizers(optimizers)
        if self._warm is not None and model.built:
            warm_start.warm_start(self._warm, model.weights)
            self._warm = None
            changed = True
        if changed:
            self._replicas.copy_weights(into_replicas=False)
        return changed

    def _restore_optimizers(self, optimizers: list) -> None:
        self._pending.discard("optimizers")
        groups = model_groups(self._replicas.replica_model, optimizers)["optimizers"]
        problems = [self._reader.mismatch(("optimizers", j), v) for j, v in enumerate(groups)]
        stored = self._reader.count("optimizers")
        if stored != len(groups) or any(problems):
            detail = next(
                (p for p in problems if p), f"{stored} optimizers stored, {len(groups)} here"
            )
            errors.warn(
                f"tpufit: the optimizer state in {self.restored_from} does not fit this "
                f"model's optimizer ({detail}); training resumes with a fresh optimizer state."
            )
            return
        for j, variables in enumerate(groups):
            self._reader.assign(("optimizers", j), variables)

    def training_starts(self) -> None:
        """Gives up restoring optimizers not built by the start of a `fit`.

        Such an optimizer makes its variables inside the first step, too late
        to restore them before training.
        """
        if "optimizers" in self._pending and self._reader.count("optimizers"):
            errors.warn(
                "tpufit: the optimizer state in the checkpoint was not restored: the optimizer "
                "creates its variables in the first training step."
            )
        self._pending.discard("optimizers")

    def fit_hooks(self) -> list:
        """Returns the hooks a `model_dir` adds to a `fit`: the checkpoint saver, the summaries.

        They run after the NaN guard (`RunConfig.nan_guard`), so a non-finite
        loss ends the run before anything is saved; without the guard, the
        saver itself never saves after a non-finite loss.
        """
        if self._saver is None:
            return []
        saver = CheckpointHook(
            self._saver,
            every_steps=self._config.save_checkpoints_steps,
            every_secs=self._config.save_checkpoints_secs,
        )
        return [saver, *summary_hooks(self._config, self.path)]

    @property
    def eval_summaries(self) -> EvalSummaryWriter | None:
        """The writer of every evaluation of this model to `<model_dir>/eval`.

        One for the model's life in this process (one event file), or `None`
        without a `model_dir` or with `RunConfig(save_summary_steps=None)`.
        """
        if self.path is None or self._config.save_summary_steps is None:
            return None
        if self._eval_summaries is None:
            self._eval_summaries = EvalSummaryWriter(self.path, self._replicas.strategy)
        return self._eval_summaries

    def eval_hooks(self) -> list:
        """Returns the hooks a `model_dir` adds to an evaluation (`evaluate`, `fit`'s validation).

        The summary hook, writing the evaluation's logs to `<model_dir>/eval`
        at the global step evaluated, through `eval_summaries`.
        """
        writer = self.eval_summaries
        return [] if writer is None else [EvalSummaryHook(writer)]

    def _incompatible(self, problem: str) -> errors.IncompatibleCheckpointError:
        return errors.IncompatibleCheckpointError(
            f"The checkpoint in model_dir does not belong to this model: {problem}. "
            "Use a new model_dir for a different model, or the model that wrote it "
            "(to initialise from part of it, use RunConfig(warm_start_from=...)). "
            f"Received: model_dir={self.path!r} holding {os.path.basename(self.restored_from)}"
        )
